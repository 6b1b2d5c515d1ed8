# Table 5, "Complete, alpha, uniform sparse".
_base_ = ['_base_/faster-rcnn_toponet_fpn_1x_coco.py']

model = dict(backbone=dict(
    name='toponet_complete', alpha_trainable=True,
    init_cfg=dict(checkpoint='work_dirs/toponet_imagenet_complete_uniform/toponet_imagenet.safetensors')))
optim_wrapper = dict(sparsity=dict(mode='uniform', lam=1e-4))
