"""Classification pretraining (ImageNet, CIFAR-100, Fashion-MNIST) on mmengine: the
producer of the shared checkpoints that detection and face load. Not implemented yet:
see the classification issue."""
