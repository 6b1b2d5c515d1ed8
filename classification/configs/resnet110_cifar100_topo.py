# Table 2, ResNet-110 optimized: complete DAG per stage (interval 1) with learnable alpha.
_base_ = ['_base_/resnet_cifar100.py']
model = dict(backbone=dict(name='resnet110_cifar_topo'))
