import pytest
import torch

from classification.model import TopoClassifier


def _classifier(**kwargs):
    torch.manual_seed(0)
    model = TopoClassifier(backbone=dict(name='toponet_fmnist_complete', num_classes=10, in_chans=1), **kwargs)
    return model.eval()


def test_flip_test_averages_the_mirrored_prediction():
    plain, flipped = _classifier(), _classifier(flip_test=True)
    flipped.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 28, 28)
    labels = torch.arange(4)
    with torch.no_grad():
        expected = (plain(x).softmax(1) + plain(x.flip(3)).softmax(1)) / 2
        preds = flipped(x, labels, mode='predict')
        single = plain(x, labels, mode='predict')
    got = torch.stack([p['logits'] for p in preds]).exp()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # without flip_test the logits are the network's own
    torch.testing.assert_close(torch.stack([p['logits'] for p in single]), plain(x))
    # a mirror-symmetric image gets the same prediction either way
    sym = torch.randn(2, 1, 28, 14)
    sym = torch.cat([sym, sym.flip(3)], dim=3)
    with torch.no_grad():
        a = torch.stack([p['logits'] for p in flipped(sym, labels[:2], mode='predict')]).exp()
    torch.testing.assert_close(a, plain(sym).softmax(1), rtol=1e-5, atol=1e-6)


def test_classifier_argument_errors():
    with pytest.raises(ValueError, match='needs a timm model "name"'):
        TopoClassifier(backbone=dict(num_classes=10))
    with pytest.raises(ValueError, match=r'label_smoothing must be in \[0, 1\), got 1.5'):
        _classifier(label_smoothing=1.5)
    with pytest.raises(ValueError, match="mode='loss' needs labels"):
        _classifier()(torch.randn(1, 1, 28, 28), mode='loss')
