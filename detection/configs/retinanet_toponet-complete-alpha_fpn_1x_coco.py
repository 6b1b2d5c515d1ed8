# RetinaNet counterpart of Table 5, "Complete, alpha": learned edge weights, no sparsity.
_base_ = ['_base_/retinanet_toponet_fpn_1x_coco.py']

model = dict(backbone=dict(
    name='toponet_complete', alpha_trainable=True,
    init_cfg=dict(checkpoint='work_dirs/toponet_imagenet_complete_alpha/toponet_imagenet.safetensors')))
