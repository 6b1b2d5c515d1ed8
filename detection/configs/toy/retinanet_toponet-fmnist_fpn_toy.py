# The `make demo` detection step: RetinaNet FPN on the toy shapes with the Fashion-MNIST TopoNet
# of the classification demo (toponet_fmnist_complete: complete DAGs, alpha, adaptive sparsity
# kept while fine-tuning). Its 1-channel stem is adapted to RGB and the network re-strided to
# the FPN strides 4/8/16/32 (stem 2, stages 2/2/2/2; it was trained with 1 and 2/2/2/1).
# A light head (two 64-wide conv layers per branch), anchors from 16 pixels at stride 4 to 256
# at stride 64, and a GIoU box loss (boxes must be tight: COCO mAP averages IoU 0.5 to 0.95).
# BatchNorm keeps training (norm_eval=False): Fashion-MNIST statistics do not fit colour images.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', '_base_/toy_shapes.py']

fmnist_mean, fmnist_std = 0.2860 * 255, 0.3530 * 255
model = dict(
    data_preprocessor=dict(mean=[fmnist_mean] * 3, std=[fmnist_std] * 3),
    backbone=dict(
        _delete_=True, type='TopoNetBackbone', name='toponet_fmnist_complete', alpha_trainable=True,
        stem_stride=2, stage_strides=(2, 2, 2, 2), out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/demo/fmnist/toponet_fmnist.safetensors')),
    neck=dict(in_channels=[32, 64, 128, 160], out_channels=64, start_level=0, add_extra_convs='on_output',
              num_outs=5),
    bbox_head=dict(num_classes=3, in_channels=64, stacked_convs=2, feat_channels=64,
                   anchor_generator=dict(octave_base_scale=4, scales_per_octave=2, strides=[4, 8, 16, 32, 64]),
                   reg_decoded_bbox=True, loss_bbox=dict(_delete_=True, type='GIoULoss', loss_weight=2.0)),
    test_cfg=dict(nms_pre=300, max_per_img=20))
