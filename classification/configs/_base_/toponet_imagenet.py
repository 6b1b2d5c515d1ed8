# The paper's ImageNet recipe for TopoNets (appendix A.2.1): 100 epochs, batch 1024
# (64 per GPU on 16 GPUs), SGD Nesterov 0.9, lr 0.4 with cosine decay, weight decay 1e-4,
# label smoothing 0.1, 224x224, no dropout. Alpha is never weight-decayed.
# With another GPU count, enable auto_scale_lr to scale lr linearly to the real batch.
_base_ = ['default_runtime.py']

data_root = 'data/imagenet'
max_epochs = 100

model = dict(
    type='TopoClassifier',
    backbone=dict(name='toponet_complete', num_classes=1000, alpha_trainable=True, seed=0, drop_rate=0.0),
    label_smoothing=0.1,
    channels_last=True,
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))

train_dataloader = dict(
    batch_size=64, num_workers=8, persistent_workers=True, pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNetFolder', root=data_root, split='train', transform='imagenet_train'))
val_dataloader = dict(
    batch_size=100, num_workers=8, persistent_workers=True, pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNetFolder', root=data_root, split='val', transform='imagenet_val'))
test_dataloader = val_dataloader

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)

optim_wrapper = dict(
    type='TopologySparsityOptimWrapper',
    sparsity=dict(mode='adaptive', lam=1e-4),
    constructor='TopologyOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.4, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=0.0,
                        convert_to_iter_based=True)]
auto_scale_lr = dict(base_batch_size=1024, enable=False)

custom_hooks = [dict(type='ExportCheckpointHook', out_name='toponet_imagenet')]
