# RetinaNet with TopoNet "Complete" (Table 4): complete DAGs, every edge weight fixed at 1.
_base_ = ['_base_/retinanet_toponet_fpn_1x_coco.py']

model = dict(backbone=dict(
    name='toponet_complete', alpha_trainable=False,
    init_cfg=dict(checkpoint='work_dirs/toponet_imagenet_complete/toponet_imagenet.safetensors')))
