# Table 6 "Complete, alpha": complete DAGs with learnable edge weights, no sparsity.
_base_ = ['_base_/face_ms1mv2.py']
model = dict(backbone=dict(topology='complete', alpha_trainable=True))
optim_wrapper = dict(sparsity=dict(mode='none', lam=0.0))
