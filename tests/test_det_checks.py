"""COCO annotation checks: structural faults are errors naming the record, invalid boxes
are counted, reported and left out, what mmdet supports (test-dev image-info files, a
subset of the classes) loads through the registered dataset, and a broken image is named."""
import copy
import json
import math
import os
import shutil

import pytest

import detection  # noqa: F401  (registrations)
from backbones.errors import InputError
from detection.checks import DetectionDataError, check_coco_annotations
from detection.toy_coco import TOY_CLASSES, make_toy_coco, toy_coco_paths

from mmengine.registry import init_default_scope
from mmdet.registry import DATASETS


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy'))
    make_toy_coco(root, num_train=6, num_val=3, image_size=64, min_size=12, max_size=28, seed=5)
    return root


@pytest.fixture
def split(toy, tmp_path):
    """A private copy of the toy set: (annotation file, image folder, parsed JSON)."""
    root = str(tmp_path / 'toy')
    shutil.copytree(toy, root)
    ann_file, img_dir = toy_coco_paths(root, 'train')
    return ann_file, img_dir, json.load(open(ann_file))


def _write(ann_file, coco):
    with open(ann_file, 'w') as f:
        json.dump(coco, f)  # NaN and Infinity become the JSON extensions Python reads back


def _dataset(ann_file, img_dir, pipeline=(), **kwargs):
    init_default_scope('mmdet')
    cfg = dict(type='CheckedCocoDataset', ann_file=ann_file, data_prefix=dict(img=img_dir + '/'),
               metainfo=dict(classes=TOY_CLASSES), pipeline=list(pipeline), test_mode=True)
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def _raises(ann_file, coco, pattern):
    _write(ann_file, coco)
    with pytest.raises(DetectionDataError, match=pattern) as info:
        check_coco_annotations(ann_file, classes=TOY_CLASSES)
    assert isinstance(info.value, InputError)  # the command lines print it as one error: line
    return info.value


def test_structural_faults_are_errors_naming_the_record(split):
    ann_file, _, coco = split
    bad = copy.deepcopy(coco)
    bad['images'][3]['id'] = bad['images'][1]['id']
    _raises(ann_file, bad, r"duplicate image id 2 \(.*instances_train\.json images\[3\] \('000003\.png'\)\): "
                           r"unique ids; '000001\.png' has it too")
    bad = copy.deepcopy(coco)
    bad['annotations'][2]['image_id'] = 4242
    _raises(ann_file, bad, rf"annotations\[2\] \(id {coco['annotations'][2]['id']}\) refers to image_id 4242, "
                           r"which is not in \"images\"")
    bad = copy.deepcopy(coco)
    bad['annotations'][1]['category_id'] = 7
    _raises(ann_file, bad, rf"annotations\[1\] \(id {coco['annotations'][1]['id']}\) has category_id 7, "
                           r"expected one of 1, 2, 3")
    bad = copy.deepcopy(coco)
    bad['annotations'][4]['id'] = bad['annotations'][0]['id']
    _raises(ann_file, bad, r"duplicate annotation id 1 .*annotations\[4\].*annotations\[0\] has it too")
    bad = copy.deepcopy(coco)
    bad['categories'][2]['name'] = 'square'
    _raises(ann_file, bad, r"duplicate category name 'square' .*categories\[2\] \(id 3\)")
    bad = copy.deepcopy(coco)
    del bad['annotations'][0]['area']
    _raises(ann_file, bad, r"annotation has area None .*annotations\[0\] \(id 1\)")


def test_invalid_boxes_are_counted_reported_and_left_out(split):
    ann_file, img_dir, coco = split
    anns = coco['annotations']
    file_of = {img['id']: img['file_name'] for img in coco['images']}
    anns[0]['bbox'][2] = 0.0                        # no width
    anns[1]['bbox'][1] = math.nan                   # not finite
    anns[2]['bbox'][3] = math.inf
    anns[3]['bbox'] = [50.0, 50.0, 30.0, 10.0]      # 80 > 64 + 1: outside the 64x64 image
    anns[4]['bbox'][0] = -0.5                       # within the 1-pixel tolerance: kept
    _write(ann_file, coco)
    check = check_coco_annotations(ann_file, classes=TOY_CLASSES)
    assert check.num_boxes == len(anns)
    assert [(i, ann_id, name) for i, ann_id, name, _ in check.invalid_boxes] == [
        (i, anns[i]['id'], file_of[anns[i]['image_id']]) for i in range(4)]
    summary = check.invalid_summary(n=2)
    assert summary.startswith(f'{ann_file}: 4 of {len(anns)} boxes are invalid and left out: ')
    assert (f"annotation 1 (image {file_of[anns[0]['image_id']]}): bbox [{anns[0]['bbox'][0]}" in summary
            and 'width 0.0 and height' in summary and 'is not finite; ... (2 more)' in summary)
    assert 'reaches outside the 64x64 image' in check.invalid_boxes[3][3]

    # the registered dataset trains on every other box and on none of these
    dataset = _dataset(ann_file, img_dir, test_mode=False, filter_cfg=dict(filter_empty_gt=False))
    assert [b[1] for b in dataset.invalid_boxes] == [a['id'] for a in anns[:4]]
    boxes = [inst['bbox'] for i in range(len(dataset)) for inst in dataset.get_data_info(i)['instances']]
    assert all(all(math.isfinite(v) for v in box) and -1 <= box[0] < box[2] <= 65 and -1 <= box[1] < box[3] <= 65
               for box in boxes)
    assert len(boxes) == len(anns) - 4
    x, y, w, h = anns[4]['bbox']
    assert [x, y, x + w, y + h] in boxes


def test_split_with_only_invalid_boxes_is_an_error(split):
    ann_file, _, coco = split
    for ann in coco['annotations']:
        ann['bbox'][2] = -1.0
    err = _raises(ann_file, coco, rf"every one of the {len(coco['annotations'])} boxes is invalid")
    assert 'annotation 1 (image ' in str(err)


def test_test_dev_image_info_file_loads_through_the_dataset(split):
    ann_file, img_dir, coco = split
    info = {k: coco[k] for k in ('info', 'licenses', 'images', 'categories')}  # image_info_test-dev2017.json
    _write(ann_file, info)
    dataset = _dataset(ann_file, img_dir)
    assert len(dataset) == len(coco['images'])
    assert all(dataset.get_data_info(i)['instances'] == [] for i in range(len(dataset)))
    assert os.path.basename(dataset.get_data_info(0)['img_path']) == coco['images'][0]['file_name']
    info['annotations'] = {}
    _raises(ann_file, info, r'"annotations" is a dict, expected a list')


def test_subset_of_classes_through_the_dataset(split):
    ann_file, img_dir, coco = split
    classes = ('square', 'triangle')  # categories 1 and 3 of 3, in the file's order
    dataset = _dataset(ann_file, img_dir, metainfo=dict(classes=classes), test_mode=False,
                       filter_cfg=dict(filter_empty_gt=False))
    assert dataset.metainfo['classes'] == classes
    got = sorted((dataset.get_data_info(i)['img_id'], inst['bbox_label'], [round(v, 2) for v in inst['bbox']])
                 for i in range(len(dataset)) for inst in dataset.get_data_info(i)['instances'])
    label = {1: 0, 3: 1}
    want = sorted((a['image_id'], label[a['category_id']],
                   [round(v, 2) for v in (a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                                          a['bbox'][1] + a['bbox'][3])])
                  for a in coco['annotations'] if a['category_id'] in label)
    assert got == want and {g[1] for g in got} == {0, 1}
    # mmdet numbers labels in file order: another order would name every prediction wrongly
    with pytest.raises(DetectionDataError, match=r"classes \('triangle', 'square'\) are not in the order of the "
                                                 r"file's categories .*\('square', 'triangle'\)"):
        _dataset(ann_file, img_dir, metainfo=dict(classes=('triangle', 'square')))
    with pytest.raises(DetectionDataError, match=r"'hexagon' is not among them"):
        _dataset(ann_file, img_dir, metainfo=dict(classes=('square', 'hexagon')))


def test_empty_image_file_is_an_error_before_training(split):
    ann_file, img_dir, _ = split
    open(os.path.join(img_dir, '000004.png'), 'wb').close()
    with pytest.raises(DetectionDataError, match=r"1 of 6 images listed in .* are empty files.*'000004\.png'"):
        _dataset(ann_file, img_dir)


def test_undecodable_image_is_named_when_first_read(split):
    ann_file, img_dir, _ = split
    broken = os.path.join(img_dir, '000002.png')
    with open(broken, 'wb') as f:
        f.write(b'\x89PNG but not really an image')
    dataset = _dataset(ann_file, img_dir, pipeline=[dict(type='LoadImageFromFile'),
                                                    dict(type='LoadAnnotations', with_bbox=True)])
    names = [os.path.basename(dataset.get_data_info(i)['img_path']) for i in range(len(dataset))]
    index = names.index('000002.png')
    assert dataset[index - 1]['img'].shape == (64, 64, 3)  # the others read as usual
    with pytest.raises(DetectionDataError, match=rf"image file cannot be decoded \({broken}\)"):
        dataset[index]
