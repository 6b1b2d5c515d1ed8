"""Inference on a user's own images: classification.inference (ImageClassifier, the
per-image prediction files) and, for detection, mmdet's DetInferencer on a toy detector
trained through tools/train_det.py, plus tools/test_det.py --tta --out."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import save_checkpoint
from backbones.errors import InputError
from classification.inference import ImageClassifier, write_predictions
from tests.helpers.tiny_data import toy_coco_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DET_CONFIG = os.path.join(ROOT, 'detection', 'configs', 'toy', 'retinanet_toponet-fmnist_fpn_toy.py')
NAMES = [f'item {i}' for i in range(10)]


@pytest.fixture(scope='module')
def fmnist_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp('classify')
    torch.manual_seed(0)
    model = timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1)
    with torch.no_grad():  # a head that separates the classes, so the top-k are distinct
        model.get_classifier().weight.normal_(0, 1)
    path = str(root / 'fmnist.safetensors')
    save_checkpoint(path, model, 'toponet_fmnist_complete', dict(num_classes=10, in_chans=1), meta=dict(classes=NAMES))
    bare = str(root / 'no_names.safetensors')
    save_checkpoint(bare, model, 'toponet_fmnist_complete', dict(num_classes=10, in_chans=1))
    photo = str(root / 'photo.jpg')  # colour, 45 x 60: neither the channels nor the size of the model's input
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(photo, quality=95)
    return dict(root=root, ckpt=path, bare=bare, photo=photo, model=model.eval())


def test_a_colour_photo_is_converted_resized_and_normalised(fmnist_ckpt):
    classifier = ImageClassifier(fmnist_ckpt['ckpt'])
    assert classifier.input_size == (1, 28, 28) and classifier.classes == NAMES
    x = classifier.preprocess(fmnist_ckpt['photo'])
    # by hand with PIL: grey, shorter side to 28 (60 -> 37 wide), centre crop, Fashion-MNIST mean/std
    grey = Image.open(fmnist_ckpt['photo']).convert('L').resize((37, 28), Image.BILINEAR)
    left = int(round((37 - 28) / 2.0))
    by_hand = (np.asarray(grey, dtype=np.float32)[:, left:left + 28] / 255.0 - 0.2860) / 0.3530
    assert x.shape == (1, 28, 28)
    assert np.abs(x[0].numpy() - by_hand).max() < 0.05  # a few grey levels of resampling difference
    [prediction] = classifier.predict(fmnist_ckpt['photo'], topk=3)
    with torch.no_grad():
        probs = fmnist_ckpt['model'](x[None]).softmax(1)[0]
    scores, indices = probs.topk(3)
    assert prediction['image'] == fmnist_ckpt['photo'] and prediction['indices'] == indices.tolist()
    assert prediction['classes'] == [NAMES[i] for i in indices.tolist()]
    np.testing.assert_allclose(prediction['scores'], scores.numpy(), rtol=1e-5)


def test_in_memory_images_and_batches(fmnist_ckpt):
    classifier = ImageClassifier(fmnist_ckpt['ckpt'])
    photo = Image.open(fmnist_ckpt['photo'])
    arrays = [np.asarray(photo), np.asarray(photo.convert('L')), photo]
    predictions = classifier.predict(arrays, topk=2, batch_size=2)
    assert [p['image'] for p in predictions] == [0, 1, 2]
    # the same picture as RGB array, grey array and PIL image: the same answer
    assert predictions[0]['indices'] == predictions[1]['indices'] == predictions[2]['indices']
    assert all(len(p['classes']) == 2 and p['scores'][0] >= p['scores'][1] for p in predictions)


def test_names_fall_back_to_indices_and_rgb_models_take_grey_images(fmnist_ckpt, tmp_path):
    assert ImageClassifier(fmnist_ckpt['bare']).classes == [str(i) for i in range(10)]
    model = timm.create_model('toponet_fmnist_complete', num_classes=4, in_chans=3)
    path = str(tmp_path / 'rgb.safetensors')
    save_checkpoint(path, model, 'toponet_fmnist_complete', dict(num_classes=4, in_chans=3))
    classifier = ImageClassifier(path)
    grey = str(tmp_path / 'grey.png')
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(grey)
    x = classifier.preprocess(grey)
    assert x.shape == (3, 28, 28)
    pixels = x * classifier.std + classifier.mean  # undo the normalisation: R = G = B
    torch.testing.assert_close(pixels[0], pixels[1])
    torch.testing.assert_close(pixels[1], pixels[2])
    assert len(classifier.predict(grey, topk=10)[0]['classes']) == 4  # at most one per class


def test_bad_inputs_are_user_errors(fmnist_ckpt, tmp_path):
    classifier = ImageClassifier(fmnist_ckpt['ckpt'])
    text = tmp_path / 'notes.png'
    text.write_text('not an image')
    with pytest.raises(InputError, match='cannot decode the image'):
        classifier.predict(str(text))
    with pytest.raises(FileNotFoundError, match='image not found'):
        classifier.predict(str(tmp_path / 'missing.jpg'))
    with pytest.raises(InputError, match='topk'):
        classifier.predict(fmnist_ckpt['photo'], topk=0)
    with pytest.raises(InputError, match='uint8'):
        classifier.predict(np.zeros((4, 4), dtype=np.float32))
    face = str(tmp_path / 'face.safetensors')  # any network saved under the face model's name
    save_checkpoint(face, fmnist_ckpt['model'], 'face_toponet', dict(num_classes=10, in_chans=1))
    with pytest.raises(InputError, match='not an image classifier'):
        ImageClassifier(face)


def test_prediction_files(tmp_path):
    rows = [dict(label=1, indices=[1, 0], scores=[0.7, 0.2]), dict(label=0, indices=[1, 2], scores=[0.5, 0.4])]
    npz = write_predictions(str(tmp_path / 'p.npz'), rows, ['a', 'b', 'c'], sources=['x.jpg', 'y.jpg'])
    with np.load(npz, allow_pickle=False) as data:  # plain arrays: no pickles
        assert data['topk_indices'].tolist() == [[1, 0], [1, 2]] and data['labels'].tolist() == [1, 0]
        assert data['classes'].tolist() == ['a', 'b', 'c'] and data['sources'].tolist() == ['x.jpg', 'y.jpg']
        np.testing.assert_allclose(data['topk_scores'], [[0.7, 0.2], [0.5, 0.4]], rtol=1e-6)
    dump = json.loads(open(write_predictions(str(tmp_path / 'p.json'), rows, ['a', 'b', 'c'])).read())
    assert dump['predictions'][1] == dict(index=1, label=0, topk_indices=[1, 2], topk_classes=['b', 'c'],
                                          topk_scores=[0.5, 0.4])
    with pytest.raises(InputError, match='.json or .npz'):
        write_predictions(str(tmp_path / 'p.csv'), rows, ['a', 'b', 'c'])


# -- detection ----------------------------------------------------------------------------------
def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]),
                OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore')


@pytest.fixture(scope='module')
def toy_detector(tmp_path_factory):
    """A RetinaNet on the toy shapes trained for one epoch through tools/train_det.py."""
    from detection.toy_coco import make_toy_coco
    root = tmp_path_factory.mktemp('det')
    data = str(root / 'toy')
    make_toy_coco(data, num_train=8, num_val=4, image_size=64, min_size=12, max_size=28)
    backbone = str(root / 'fmnist.safetensors')
    save_checkpoint(backbone, timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1),
                    'toponet_fmnist_complete', dict(num_classes=10, in_chans=1))
    work_dir = root / 'run'
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train_det.py'), DET_CONFIG, '--work-dir', str(work_dir),
           '--cfg-options', f'model.backbone.init_cfg.checkpoint={backbone}', 'train_cfg.max_epochs=1',
           'train_cfg.val_interval=1', 'train_dataloader.batch_size=4', 'default_hooks.checkpoint.interval=1',
           'model.test_cfg.score_thr=0.0', *toy_coco_options(data)]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # the run's last line names its work dir
    assert summary == dict(work_dir=str(work_dir), epoch=1, iter=2)
    return dict(root=root, data=data, work_dir=work_dir, weights=os.path.join(summary['work_dir'], 'epoch_1.pth'),
                config=os.path.join(summary['work_dir'], os.path.basename(DET_CONFIG)))


def test_det_inferencer_on_an_image_file(toy_detector):
    """The documented example: mmdet's DetInferencer with the config the run saved in its
    work dir and the run's checkpoint, on a picture of shapes."""
    from mmdet.apis import DetInferencer

    import detection  # noqa: F401  (registers TopoNetBackbone, the mmdet:: config lookups)
    from backbones.mmengine_runner import allow_mmengine_checkpoint_globals
    # DetInferencer loads the .pth with torch.load(weights_only=True): mmengine's own types
    # in the checkpoint must be allow-listed first
    allow_mmengine_checkpoint_globals()
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    picture[12:40, 16:44] = (230, 40, 40)  # a square
    image = str(toy_detector['root'] / 'shapes.png')
    Image.fromarray(picture).save(image)
    inferencer = DetInferencer(model=toy_detector['config'], weights=toy_detector['weights'], device='cpu')
    assert tuple(inferencer.model.dataset_meta['classes']) == ('square', 'circle', 'triangle')
    out_dir = toy_detector['root'] / 'vis'
    result = inferencer(image, out_dir=str(out_dir), pred_score_thr=0.0)
    [prediction] = result['predictions']
    boxes, scores = np.asarray(prediction['bboxes']), np.asarray(prediction['scores'])
    assert 0 < len(boxes) <= 20 and boxes.shape[1] == 4  # the config's max_per_img
    assert boxes.min() >= 0 and boxes.max() <= 64 and set(prediction['labels']) <= {0, 1, 2}
    assert np.all(np.diff(scores) <= 0) and scores.max() <= 1
    assert (out_dir / 'vis' / 'shapes.png').is_file()


def test_test_det_dumps_tta_predictions(toy_detector, tmp_path):
    from mmengine.fileio import load
    out = tmp_path / 'results.pkl'
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'test_det.py'), DET_CONFIG, str(toy_detector['work_dir']),
           '--work-dir', str(tmp_path / 'test'), '--tta', '--out', str(out), '--cfg-options',
           'model.test_cfg.score_thr=0.0', *toy_coco_options(toy_detector['data'])]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics['tta'] is True and metrics['out'] == str(out) and 'coco/bbox_mAP' in metrics
    dumped = load(str(out))  # mmdet's result dump (a pickle this test wrote itself)
    assert len(dumped) == 4 and all(len(d['pred_instances']['bboxes']) > 0 for d in dumped)
    assert all('flip' in d and 'gt_instances' not in d for d in dumped)  # merged views, ground truth removed
