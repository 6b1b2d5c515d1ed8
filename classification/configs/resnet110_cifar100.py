# Table 2, ResNet-110 original (residual topology, interval 2, alpha fixed). Other depths:
# --cfg-options model.backbone.name=resnet56_cifar
_base_ = ['_base_/resnet_cifar100.py']
