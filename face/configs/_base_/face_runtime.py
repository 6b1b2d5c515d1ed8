# What every face training run shares: registrations, iteration-based loop, hooks, environment.
custom_imports = dict(imports=['face', 'backbones.mmengine_optim'], allow_failed_imports=False)

train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))

randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=True, dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
