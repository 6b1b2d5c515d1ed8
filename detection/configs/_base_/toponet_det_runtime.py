# What every detection run of this project adds to mmdet's runtime: our registrations
# (TopoNetBackbone, CheckedCocoDataset, the sparsity optimizer wrapper and its constructor)
# the check that the head predicts the dataset's classes, box heads in float32 under
# --amp (detection/amp.py), and the shared progress bar.
custom_imports = dict(imports=['backbones.mmdet_backbone', 'backbones.mmengine_optim', 'backbones.mmengine_hooks',
                               'detection'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='DetectionDataCheckHook'), dict(type='BoxHeadsInFloat32Hook'), dict(type='ProgressBarHook')]
