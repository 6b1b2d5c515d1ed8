# Table 6 "Complete, alpha, adaptive sparse": L1 scaled by log(in-degree) (the paper's best).
_base_ = ['_base_/face_ms1mv2.py']
model = dict(backbone=dict(topology='complete', alpha_trainable=True))
optim_wrapper = dict(sparsity=dict(mode='adaptive', lam=1e-4))
