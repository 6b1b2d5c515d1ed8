# Table 3, MobileNetV2-1.0 original. Depth extensions: model.backbone.name=mobilenetv2_100_2n_orig etc.
_base_ = ['_base_/mobilenetv2_imagenet.py']
