# Table 5, "Complete, alpha, adaptive sparse" (the paper's best: 41.69 AP with FPN).
_base_ = ['_base_/faster-rcnn_toponet_fpn_1x_coco.py']

model = dict(backbone=dict(
    name='toponet_complete', alpha_trainable=True,
    init_cfg=dict(checkpoint='work_dirs/toponet_imagenet_complete_adaptive/toponet_imagenet.safetensors')))
optim_wrapper = dict(sparsity=dict(mode='adaptive', lam=1e-4))
