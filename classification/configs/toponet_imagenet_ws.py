# Table 7, Watts-Strogatz (k=4, p=0.75) as in Xie et al.; no droppath, no dropout.
_base_ = ['_base_/toponet_imagenet.py']
model = dict(backbone=dict(name='toponet_ws', alpha_trainable=False))
optim_wrapper = dict(sparsity=dict(mode='none'))
