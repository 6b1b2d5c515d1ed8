# Table 4, "Complete, alpha, uniform sparse".
_base_ = ['_base_/toponet_imagenet.py']
optim_wrapper = dict(sparsity=dict(mode='uniform', lam=1e-4))
