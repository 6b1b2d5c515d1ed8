# The paper's face recipe (appendix A.2.3): ArcFace (s=64, m=0.5) on MS1MV2 (85,742
# identities, insightface's RecordIO release), a 256-d feature, 80k iterations of batch 512
# (64 x 8 GPUs), SGD momentum 0.9 without dampening, lr 0.0375 divided by 10 at 30k, 50k and
# 70k, weight decay 1e-4; verification on LFW, CFP-FP and AgeDB-30 every 2,000 iterations.
_base_ = ['face_runtime.py']

data_root = 'data/faces_emore'
num_classes = 85742
max_iters = 80000

model = dict(
    type='FaceRecognizer',
    backbone=dict(channels=64, nodes=(14, 20, 26, 14), topology='complete', alpha_trainable=True, seed=0,
                  input_size=112, embedding_size=256, dropout=0.0),
    head=dict(num_classes=num_classes, margin='arcface', scale=64.0),
    data_preprocessor=dict(type='FaceDataPreprocessor'))

train_dataloader = dict(
    batch_size=64, num_workers=4, persistent_workers=True, pin_memory=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='FaceRecordDataset', root=data_root, flip=True, num_classes=num_classes))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

optim_wrapper = dict(
    type='TopologySparsityOptimWrapper',
    sparsity=dict(mode='none', lam=0.0),
    constructor='TopologyOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.0375, momentum=0.9, dampening=0.0, weight_decay=1e-4))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[30000, 50000, 70000], gamma=0.1),
]

custom_hooks = [
    dict(type='FaceVerificationHook', interval=2000,
         bins=[f'{data_root}/lfw.bin', f'{data_root}/cfp_fp.bin', f'{data_root}/agedb_30.bin']),
    dict(type='FaceExportHook', out_name='toponet_face', interval=2000),
    dict(type='ProgressBarHook'),
]
