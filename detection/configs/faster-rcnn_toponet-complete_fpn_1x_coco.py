# TopoNet "Complete" (Table 4): complete DAGs, every edge weight fixed at 1 (Table 5 lists it with alpha only).
_base_ = ['_base_/faster-rcnn_toponet_fpn_1x_coco.py']

model = dict(backbone=dict(
    name='toponet_complete', alpha_trainable=False,
    init_cfg=dict(checkpoint='work_dirs/toponet_imagenet_complete/toponet_imagenet.safetensors')))
