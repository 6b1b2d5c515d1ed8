# Table 4, "Residual, l = 2" (fixed topology; name another toponet_residual_l*/random_p* to vary).
_base_ = ['_base_/toponet_imagenet.py']
model = dict(backbone=dict(name='toponet_residual_l2', alpha_trainable=False))
optim_wrapper = dict(sparsity=dict(mode='none'))
