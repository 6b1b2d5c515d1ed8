# Table 6 "Complete, alpha, uniform sparse": L1 on the edge weights, one lambda for all.
_base_ = ['_base_/face_ms1mv2.py']
model = dict(backbone=dict(topology='complete', alpha_trainable=True))
optim_wrapper = dict(sparsity=dict(mode='uniform', lam=1e-4))
