# The paper's ImageNet recipe for MobileNetV2 (appendix A.1.2): 200 epochs, batch 1024
# (64 per GPU on 16 GPUs), SGD Nesterov 0.9, lr 0.4 cosine, weight decay 4e-5, dropout 0.2.
_base_ = ['toponet_imagenet.py']
max_epochs = 200
model = dict(backbone=dict(_delete_=True, name='mobilenetv2_100_orig', num_classes=1000, drop_rate=0.2),
             label_smoothing=0.0)
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(sparsity=dict(mode='none'), optimizer=dict(weight_decay=4e-5))
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=0.0,
                        convert_to_iter_based=True)]
custom_hooks = [dict(type='ExportCheckpointHook', out_name='mobilenetv2_imagenet')]
