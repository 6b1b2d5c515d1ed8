# Small TopoNet (complete DAGs, learnable alpha, adaptive sparsity) on Fashion-MNIST: the
# `make demo` run. 10 epochs of batch 64 on 2 CPU cores (timing in the README).
_base_ = ['_base_/default_runtime.py']

data_root = '/usr/share/datasets/fashion-mnist'
max_epochs = 10

model = dict(
    type='TopoClassifier',
    backbone=dict(name='toponet_fmnist_complete', num_classes=10, in_chans=1, alpha_trainable=True, seed=0),
    label_smoothing=0.1,
    channels_last=True,
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[0.2860], std=[0.3530]))

# 5,000 training images (500 per class, a fixed draw) are held out as the validation split:
# training and recipe choices see only them; the 10k test images are scored once, at the end.
holdout = 5000
train_dataloader = dict(
    batch_size=64, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='FashionMNIST', root=data_root, split='train', holdout=holdout, transform='fmnist_train'))
val_dataloader = dict(
    batch_size=500, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='FashionMNIST', root=data_root, split='val', holdout=holdout))
test_dataloader = dict(
    batch_size=500, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='FashionMNIST', root=data_root, split='test'))
val_evaluator = dict(topk=(1,))
test_evaluator = dict(topk=(1,))

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)

optim_wrapper = dict(
    type='TopologySparsityOptimWrapper',
    # lambda chosen on the validation split, never the test set (2026-12-01, seed 100, 10 epochs):
    #   python tools/select_recipe.py classification/configs/toponet_fmnist_adaptive.py \
    #       --grid optim_wrapper.sparsity.lam=1e-4,5e-4 --seeds 100
    # gave validation top-1 93.30% at 5e-4 and 93.06% at 1e-4 (one seed: a weak preference; the
    # reproduction study's selection at 3,750 iterations also chose 5e-4, docs/reproduction.md)
    sparsity=dict(mode='adaptive', lam=5e-4),
    constructor='TopologyOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, eta_min=0.0, convert_to_iter_based=True),
]

default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))
custom_hooks = [dict(type='ExportCheckpointHook', out_name='toponet_fmnist'), dict(type='ProgressBarHook')]
