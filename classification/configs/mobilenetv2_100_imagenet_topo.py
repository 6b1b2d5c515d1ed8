# Table 3, MobileNetV2-1.0 optimized: learnable alpha on its residual DAGs.
_base_ = ['_base_/mobilenetv2_imagenet.py']
model = dict(backbone=dict(name='mobilenetv2_100_topo'))
