# Faster R-CNN FPN on the toy shapes with the backbone set-up of the demo's
# retinanet_toponet-fmnist_fpn_toy.py (Fashion-MNIST TopoNet, RGB stem, strides 4/8/16/32).
# Measured: bbox mAP 0.834 on the toy val split after the 8 epochs (Fashion-MNIST checkpoint of
# one epoch), at 1.3 times the RetinaNet's CPU time (mmcv's RoIAlign backward is slow on CPU).
_base_ = ['mmdet::_base_/models/faster-rcnn_r50_fpn.py', '_base_/toy_shapes.py']

fmnist_mean, fmnist_std = 0.2860 * 255, 0.3530 * 255
model = dict(
    data_preprocessor=dict(mean=[fmnist_mean] * 3, std=[fmnist_std] * 3),
    backbone=dict(
        _delete_=True, type='TopoNetBackbone', name='toponet_fmnist_complete', alpha_trainable=True,
        stem_stride=2, stage_strides=(2, 2, 2, 2), out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/demo/fmnist/toponet_fmnist.safetensors')),
    neck=dict(in_channels=[32, 64, 128, 160], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=600, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))
