"""The toy COCO generator and the clear errors for bad detection data."""
import json
import os

import numpy as np
import pytest

import detection  # noqa: F401  (registrations)
from detection.checks import DetectionDataError, check_coco_annotations
from detection.toy_coco import TOY_CLASSES, make_toy_coco, toy_coco_paths

from mmengine.registry import init_default_scope
from mmdet.registry import DATASETS, MODELS


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy'))
    make_toy_coco(root, num_train=6, num_val=3, image_size=64, min_size=12, max_size=28, seed=3)
    return root


def _dataset(root, split='val', **kwargs):
    init_default_scope('mmdet')
    ann_file, img_dir = toy_coco_paths(root, split)
    cfg = dict(type='CheckedCocoDataset', ann_file=ann_file, data_prefix=dict(img=img_dir + '/'),
               metainfo=dict(classes=TOY_CLASSES), pipeline=[], test_mode=True)
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_toy_coco_is_real_coco_and_deterministic(toy, tmp_path):
    from pycocotools.coco import COCO
    ann_file, img_dir = toy_coco_paths(toy, 'train')
    coco = COCO(ann_file)
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(TOY_CLASSES)
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) >= 6
    import cv2
    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann['bbox']
        assert 12 * 0.7 <= max(w, h) <= 28 + 1 and 0 <= x and x + w <= 64 and 0 <= y and y + h <= 64
        assert 0 < ann['area'] <= w * h + 1 and ann['iscrowd'] == 0
        image = cv2.imread(os.path.join(img_dir, coco.loadImgs(ann['image_id'])[0]['file_name']))
        assert image.shape == (64, 64, 3)
    # same arguments, another folder: the same bytes
    make_toy_coco(str(tmp_path), num_train=6, num_val=3, image_size=64, min_size=12, max_size=28, seed=3)
    for split in ('train', 'val'):
        assert open(toy_coco_paths(toy, split)[0]).read() == open(toy_coco_paths(str(tmp_path), split)[0]).read()
    a = cv2.imread(os.path.join(img_dir, '000002.png'))
    b = cv2.imread(os.path.join(toy_coco_paths(str(tmp_path), 'train')[1], '000002.png'))
    assert np.array_equal(a, b)
    # a rerun leaves a complete dataset alone; other arguments rewrite it
    mtime = os.path.getmtime(toy_coco_paths(str(tmp_path), 'val')[0])
    make_toy_coco(str(tmp_path), num_train=6, num_val=3, image_size=64, min_size=12, max_size=28, seed=3)
    assert os.path.getmtime(toy_coco_paths(str(tmp_path), 'val')[0]) == mtime
    make_toy_coco(str(tmp_path), num_train=6, num_val=2, image_size=64, min_size=12, max_size=28, seed=3)
    assert len(json.load(open(toy_coco_paths(str(tmp_path), 'val')[0]))['images']) == 2


def test_toy_boxes_cover_the_drawn_shapes(toy):
    import cv2
    ann_file, img_dir = toy_coco_paths(toy, 'val')
    coco = json.load(open(ann_file))
    for img in coco['images']:
        image = cv2.imread(os.path.join(img_dir, img['file_name'])).astype(np.float32)
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        # the background is a vertical gradient: a row's colour varies little outside the boxes
        mask = np.zeros(image.shape[:2], bool)
        for a in anns:
            x, y, w, h = a['bbox']
            mask[int(y):int(np.ceil(y + h)) + 1, int(x):int(np.ceil(x + w)) + 1] = True
        for a in anns:
            x, y, w, h = a['bbox']
            cy, cx = int(y + h / 2), int(x + w / 2)
            row = image[cy][~mask[cy]]
            if len(row):
                assert np.abs(image[cy, cx] - row.mean(0)).max() > 30  # the shape's centre stands out


def test_toy_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match='num_train'):
        make_toy_coco(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match='max_size'):
        make_toy_coco(str(tmp_path), image_size=32, max_size=40)


def test_checked_dataset_loads_the_toy_split(toy):
    dataset = _dataset(toy)
    assert len(dataset) == 3 and dataset.metainfo['classes'] == TOY_CLASSES
    item = dataset.get_data_info(0)
    assert os.path.isfile(item['img_path']) and item['instances']
    assert all(0 <= inst['bbox_label'] < 3 for inst in item['instances'])


def _copy_toy(toy, dst):
    import shutil
    shutil.copytree(toy, dst)
    return str(dst)


def test_malformed_json_names_file_and_position(toy, tmp_path):
    root = _copy_toy(toy, tmp_path / 'toy')
    ann_file = toy_coco_paths(root, 'val')[0]
    text = open(ann_file).read()
    open(ann_file, 'w').write(text[:len(text) // 2])
    with pytest.raises(DetectionDataError, match=r'instances_val\.json is not valid JSON: .* line 1, column \d+'):
        _dataset(root)
    open(ann_file, 'w').write(json.dumps({'images': [], 'annotations': []}))
    with pytest.raises(DetectionDataError, match=r'"categories" is missing, expected a list'):
        _dataset(root)
    coco = json.loads(text)
    coco['annotations'][0]['bbox'] = [1, 2, 3]
    open(ann_file, 'w').write(json.dumps(coco))
    with pytest.raises(DetectionDataError, match=r'bbox \[1, 2, 3\], expected \[x, y, width, height\]'):
        _dataset(root)
    coco = json.loads(text)
    coco['annotations'][0]['image_id'] = 999
    open(ann_file, 'w').write(json.dumps(coco))
    with pytest.raises(DetectionDataError, match='image_id 999'):
        _dataset(root)


def test_missing_image_file_is_named(toy, tmp_path):
    root = _copy_toy(toy, tmp_path / 'toy')
    os.remove(os.path.join(toy_coco_paths(root, 'val')[1], '000001.png'))
    with pytest.raises(DetectionDataError, match=r"1 of 3 images .* missing from .*: '000001.png'"):
        _dataset(root)
    with pytest.raises(DetectionDataError, match='annotation file not found'):
        check_coco_annotations(str(tmp_path / 'nothing.json'))


def test_category_count_disagreeing_with_the_config(toy):
    with pytest.raises(DetectionDataError, match=r"has 3 categories \('square', 'circle', 'triangle'\), "
                                                 r"the config expects 2 \('square', 'hexagon'\)"):
        _dataset(toy, metainfo=dict(classes=('square', 'hexagon')))


def test_head_class_count_disagreeing_with_the_dataset(toy):
    from detection.checks import check_num_classes, detector_num_classes
    from mmengine.config import Config
    init_default_scope('mmdet')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = Config.fromfile(os.path.join(root, 'detection', 'configs', 'toy', 'retinanet_toponet-fmnist_fpn_toy.py'))
    cfg.model.bbox_head.num_classes = 5
    detector = MODELS.build(cfg.model)
    assert detector_num_classes(detector) == 5
    with pytest.raises(DetectionDataError, match=r'predicts 5 classes but the val dataset has 3'):
        check_num_classes(detector, _dataset(toy).metainfo['classes'], 'val')
    cfg = Config.fromfile(os.path.join(root, 'detection', 'configs', 'toy', 'faster-rcnn_toponet-fmnist_fpn_toy.py'))
    assert detector_num_classes(MODELS.build(cfg.model)) == 3  # Faster R-CNN: the RoI head's classes
