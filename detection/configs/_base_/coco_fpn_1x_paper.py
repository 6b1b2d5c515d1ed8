# The paper's COCO fine-tuning recipe (appendix A.2.2, Detectron's FPN 1x): train2017 ->
# val2017, shorter side 800 (mmdet's (1333, 800) resize), 2 images per GPU on 16 GPUs,
# SGD momentum 0.9, weight decay 1e-4, lr 0.02, 12 epochs with steps at 8 and 11 (mmdet's
# 1x schedule, which is Detectron's 1x in epochs). With another GPU count, pass
# --cfg-options auto_scale_lr.enable=True to scale lr linearly from the batch of 32.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    'toponet_det_runtime.py',
]

train_dataloader = dict(batch_size=2, dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4))
auto_scale_lr = dict(enable=False, base_batch_size=32)  # 16 GPUs x 2 images
