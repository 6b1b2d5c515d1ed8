# Table 4, "Random, p = 0.4" (seeded graphs; override model.backbone.seed for repeats).
_base_ = ['_base_/toponet_imagenet.py']
model = dict(backbone=dict(name='toponet_random_p04', alpha_trainable=False))
optim_wrapper = dict(sparsity=dict(mode='none'))
