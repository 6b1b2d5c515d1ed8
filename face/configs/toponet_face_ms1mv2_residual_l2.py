# Table 6 "Residual, l = 2": residual topology with interval 2, edge weights fixed at 1.
_base_ = ['_base_/face_ms1mv2.py']
model = dict(backbone=dict(topology='residual', topology_params=dict(interval=2), alpha_trainable=False))
