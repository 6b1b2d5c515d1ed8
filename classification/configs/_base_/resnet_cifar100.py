# The paper's CIFAR-100 recipe for ResNet-CIFAR (appendix A.1.1, after DeVries & Taylor):
# 200 epochs, batch 128 (64 per GPU on 2 GPUs), SGD Nesterov 0.9 without dampening, lr 0.1
# divided by 5 at epochs 60/120/160, weight decay 5e-4, crop + flip + cutout 16x16, 32x32.
_base_ = ['default_runtime.py']

data_root = 'data/cifar100'
max_epochs = 200

model = dict(
    type='TopoClassifier',
    backbone=dict(name='resnet110_cifar', num_classes=100),
    label_smoothing=0.0,
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[0.5071, 0.4865, 0.4409], std=[0.2673, 0.2564, 0.2762]))

train_dataloader = dict(
    batch_size=64, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='Cifar100', root=data_root, split='train', transform='cifar_train'))
val_dataloader = dict(
    batch_size=500, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='Cifar100', root=data_root, split='test'))
test_dataloader = val_dataloader

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)

optim_wrapper = dict(
    type='TopologySparsityOptimWrapper',
    sparsity=dict(mode='none', lam=1e-4),
    constructor='TopologyOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, dampening=0, nesterov=True, weight_decay=5e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[60, 120, 160], gamma=0.2)]
auto_scale_lr = dict(base_batch_size=128, enable=False)

default_hooks = dict(checkpoint=dict(interval=5))
custom_hooks = [dict(type='ExportCheckpointHook', out_name='resnet_cifar100')]
