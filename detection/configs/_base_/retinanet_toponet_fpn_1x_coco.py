# RetinaNet FPN 1x with an ImageNet-pretrained TopoNet (Table 1: 2C..16C = 128..1024 channels
# at strides 4..32) in place of ResNet-50. The paper reports Faster R-CNN FPN; this uses the
# same recipe at RetinaNet's lr (0.02 at batch 32 is mmdet's RetinaNet lr 0.01 at batch 16,
# scaled linearly; coco_fpn_1x_paper.py).
# Like mmdet's ResNet-50 set-up, the stem and first stage are frozen and BatchNorm statistics
# kept (frozen_stages=1, norm_eval=True). Variants set the topology, alpha, sparsity and
# checkpoint (written by the matching classification/configs/toponet_imagenet_*.py run).
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', 'coco_fpn_1x_paper.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TopoNetBackbone', name='toponet_complete', alpha_trainable=True, seed=0,
        out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
        init_cfg=dict(type='Pretrained',
                      checkpoint='work_dirs/toponet_imagenet_complete_adaptive/toponet_imagenet.safetensors')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# alpha is never weight-decayed (as in pretraining); the sparsity term of the pretraining
# run continues while fine-tuning (mode 'none' for the variants without it)
optim_wrapper = dict(
    type='TopologySparsityOptimWrapper',
    sparsity=dict(mode='none', lam=1e-4),
    constructor='TopologyOptimWrapperConstructor',
    optimizer=dict(lr=0.02))
