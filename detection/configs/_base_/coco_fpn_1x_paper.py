# The paper's COCO fine-tuning recipe (appendix A.2.2, "the 1x setting of Detectron"):
# train2017 -> val2017, shorter side 800 (mmdet's (1333, 800) resize), 2 images per GPU on 16
# GPUs, SGD momentum 0.9, weight decay 1e-4, 12 epochs with steps at 8 and 11 (mmdet's 1x
# schedule, which is Detectron's 1x in epochs).
# Learning rate. The paper does not print it. Detectron's and mmdet's Faster R-CNN FPN 1x use
# 0.02 for a batch of 16 images (8 GPUs x 2), RetinaNet 0.01 for 16, and Detectron scales the
# lr linearly with the batch (Goyal et al., 2017). The paper's batch is 32 (16 GPUs x 2), so
# its lr is 0.04 for Faster R-CNN (here) and 0.02 for RetinaNet (the RetinaNet configs),
# stated for base_batch_size 32. On another number of GPUs, mmdet's and our train tools'
# --auto-scale-lr give lr x (GPUs x 2) / 32: 0.02 on 8 GPUs (mmdet's own recipe), 0.0025 on 1.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    'toponet_det_runtime.py',
]

train_dataloader = dict(batch_size=2, dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=1e-4))
auto_scale_lr = dict(enable=False, base_batch_size=32)  # 16 GPUs x 2 images: the batch the lr is for
