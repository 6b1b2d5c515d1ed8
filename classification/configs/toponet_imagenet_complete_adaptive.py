# Table 4, "Complete, alpha, adaptive sparse" (the paper's best: 78.60% top-1).
_base_ = ['_base_/toponet_imagenet.py']
