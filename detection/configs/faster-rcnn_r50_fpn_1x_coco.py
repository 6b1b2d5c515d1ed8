# Table 5 baseline: Faster R-CNN FPN 1x with mmdet's own ImageNet-pretrained ResNet-50 (torchvision
# weights), in the paper's recipe (_base_/coco_fpn_1x_paper.py).
_base_ = ['mmdet::_base_/models/faster-rcnn_r50_fpn.py', '_base_/coco_fpn_1x_paper.py']
