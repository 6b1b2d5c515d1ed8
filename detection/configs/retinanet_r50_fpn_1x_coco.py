# Table 5 baseline: RetinaNet FPN 1x with mmdet's own ImageNet-pretrained ResNet-50 (torchvision
# weights), in the paper's recipe (_base_/coco_fpn_1x_paper.py).
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', '_base_/coco_fpn_1x_paper.py']

optim_wrapper = dict(optimizer=dict(lr=0.02))  # RetinaNet: mmdet's 0.01 at batch 16, for 32
