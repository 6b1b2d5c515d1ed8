# Data, schedule and runtime of the toy-shapes runs (the `make demo` detection step and the
# tests): 128x128 images of squares, circles and triangles (detection/toy_coco.py), written
# by `python tools/make_toy_coco.py work_dirs/demo/toy_coco` (400 train, 100 val images).
# Model configs beside this file add the detector.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../../_base_/toponet_det_runtime.py',
]

data_root = 'work_dirs/demo/toy_coco/'
classes = ('square', 'circle', 'triangle')
image_size = 128
max_epochs = 8

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    batch_sampler=None,  # every image has the same shape: no aspect-ratio grouping
    dataset=dict(
        type='CheckedCocoDataset', data_root=data_root, metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(
        type='CheckedCocoDataset', data_root=data_root, metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# Measured on the RetinaNet of the demo: SGD (lr 0.02, batch 8, gradients clipped, L1 box loss)
# reached bbox mAP 0.22 in 12 epochs from a fresh backbone; AdamW with the GIoU loss 0.79 in 12
# (fresh) and 0.81 in 8 (Fashion-MNIST checkpoint). Alpha: no weight decay, adaptive sparsity.
optim_wrapper = dict(
    _delete_=True,
    type='TopologySparsityOptimWrapper',
    sparsity=dict(mode='adaptive', lam=1e-4),
    constructor='TopologyOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=0.0, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=4)

# A checkpoint every epoch: an interrupted `make demo` continues its detection step from the
# last finished epoch (tools/train_det.py --resume) instead of starting it again.
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=1),
    visualization=dict(draw=False))
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False)
