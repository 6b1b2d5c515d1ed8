# RetinaNet counterpart of Table 5, "Residual, l = 2": fixed residual topology, edge weights fixed at 1.
_base_ = ['_base_/retinanet_toponet_fpn_1x_coco.py']

model = dict(backbone=dict(
    name='toponet_residual_l2', alpha_trainable=False,
    init_cfg=dict(checkpoint='work_dirs/toponet_imagenet_residual_l2/toponet_imagenet.safetensors')))
