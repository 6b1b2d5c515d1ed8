# The `make demo` face step: a small face TopoNet (C=8, 4 nodes per stage, complete DAGs,
# learnable alpha, adaptive sparsity) trained on the toy identity set of face/toy_data.py
# for a minute or two on CPU. Same architecture family as the paper's model (3x3 stride-1
# stem, four stride-2 DAG stages, BN-Dropout-FC-BN head), at 32x32 input (a 2x2 final map).
# The margin is CosFace's: from scratch on 200 identities ArcFace (s=64, m=0.5) stalls for
# the first few hundred iterations (77.5% vs 87% toy verification after 200 iterations).
_base_ = ['_base_/face_runtime.py']

data_root = 'work_dirs/demo/face/data'
num_classes = 200
max_iters = 400

model = dict(
    type='FaceRecognizer',
    backbone=dict(channels=8, nodes=(4, 4, 4, 4), topology='complete', alpha_trainable=True, seed=0,
                  input_size=32, embedding_size=128, dropout=0.0),
    head=dict(num_classes=num_classes, margin='cosface', scale=64.0),
    data_preprocessor=dict(type='FaceDataPreprocessor'))

train_dataloader = dict(
    batch_size=64, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='FaceRecordDataset', root=f'{data_root}/train', image_size=32, flip=True,
                 num_classes=num_classes))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

optim_wrapper = dict(
    type='TopologySparsityOptimWrapper',
    sparsity=dict(mode='adaptive', lam=1e-4),
    constructor='TopologyOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, eta_min=0.0),
]

default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=100, max_keep_ckpts=1))
custom_hooks = [
    dict(type='FaceVerificationHook', interval=max_iters, bins=[f'{data_root}/train/toy_val.bin'], image_size=32),
    dict(type='FaceExportHook', out_name='toponet_face_toy', interval=max_iters),
    dict(type='ProgressBarHook'),
]
