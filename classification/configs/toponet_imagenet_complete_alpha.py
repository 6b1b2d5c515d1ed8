# Table 4, "Complete, alpha": learned topology without sparsity.
_base_ = ['_base_/toponet_imagenet.py']
optim_wrapper = dict(sparsity=dict(mode='none'))
