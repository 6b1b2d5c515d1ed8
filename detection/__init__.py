"""Detection: TopoNet backbones in MMDetection, FPN configs for COCO. Not implemented
yet: see the detection issue."""
