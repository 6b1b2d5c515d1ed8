# Table 4, "Complete": every edge weight fixed at 1.
_base_ = ['_base_/toponet_imagenet.py']
model = dict(backbone=dict(alpha_trainable=False))
optim_wrapper = dict(sparsity=dict(mode='none'))
