"""Tiny datasets written in the real on-disk formats, for tests."""
import os
import pickle

import numpy as np

from classification.datasets import write_idx


def make_fmnist(root, n_train=256, n_test=128, seed=0):
    """Fashion-MNIST IDX files: class c draws a bright bar at row 2c+4 over noise."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 4:2 * c + 7, 3:25] = 230
        write_idx(os.path.join(root, f'{prefix}-images-idx3-ubyte.gz'), images)
        write_idx(os.path.join(root, f'{prefix}-labels-idx1-ubyte.gz'), labels)
    return root


def make_cifar100(root, n_train=40, n_test=20, seed=0):
    """cifar-100-python/{train,test,meta} pickles with the real keys and byte strings."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    for split, n in (('train', n_train), ('test', n_test)):
        batch = {
            b'filenames': [f'img_{i}.png'.encode() for i in range(n)],
            b'batch_label': f'{split} batch'.encode(),
            b'fine_labels': [int(i % 100) for i in range(n)],
            b'coarse_labels': [int(i % 20) for i in range(n)],
            b'data': rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        }
        with open(os.path.join(folder, split), 'wb') as f:
            pickle.dump(batch, f, protocol=2)
    meta = {b'fine_label_names': [f'fine{i}'.encode() for i in range(100)],
            b'coarse_label_names': [f'coarse{i}'.encode() for i in range(20)]}
    with open(os.path.join(folder, 'meta'), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def make_image_folder(root, classes=('n01440764', 'n01443537'), per_class=3, size=(40, 30), seed=0):
    """ImageNet-style root/<split>/<wnid>/<name>.JPEG trees for train and val."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split in ('train', 'val'):
        for c in classes:
            d = os.path.join(root, split, c)
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(os.path.join(d, f'{c}_{i}.JPEG'), format='JPEG')
    return root


def toy_coco_options(root):
    """``--cfg-options`` pointing a toy detection config at a toy COCO set written by
    ``tools/make_toy_coco.py`` in ``root``."""
    root = root.rstrip('/') + '/'
    return [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader',
                                                                 'test_dataloader')] + \
           [f'{evaluator}.ann_file={root}annotations/instances_val.json' for evaluator in ('val_evaluator',
                                                                                          'test_evaluator')]
