"""The face configs hold the paper's recipe (appendix A.2.3) and Table 6's four rows."""
import pytest
from mmengine.config import Config

ROWS = {
    'toponet_face_ms1mv2_residual_l2': ('residual', False, 'none'),
    'toponet_face_ms1mv2_complete_alpha': ('complete', True, 'none'),
    'toponet_face_ms1mv2_complete_uniform': ('complete', True, 'uniform'),
    'toponet_face_ms1mv2_complete_adaptive': ('complete', True, 'adaptive'),
}


@pytest.mark.parametrize('name', sorted(ROWS))
def test_paper_recipe(name):
    cfg = Config.fromfile(f'face/configs/{name}.py')
    topology, alpha, sparsity = ROWS[name]
    backbone = cfg.model.backbone
    assert (backbone.channels, tuple(backbone.nodes), backbone.input_size) == (64, (14, 20, 26, 14), 112)
    assert backbone.embedding_size == 256
    assert backbone.topology == topology and backbone.alpha_trainable is alpha
    assert cfg.optim_wrapper.sparsity['mode'] == sparsity
    assert cfg.model.head == dict(num_classes=85742, margin='arcface', scale=64.0)
    assert cfg.train_cfg.max_iters == 80000
    assert cfg.train_dataloader.batch_size * 8 == 512  # 8 GPUs
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay, opt.dampening) == ('SGD', 0.0375, 0.9, 1e-4, 0.0)
    (step,) = cfg.param_scheduler
    assert step.type == 'MultiStepLR' and step.milestones == [30000, 50000, 70000] and step.gamma == 0.1
    bins = cfg.custom_hooks[0].bins
    assert [b.rsplit('/', 1)[1] for b in bins] == ['lfw.bin', 'cfp_fp.bin', 'agedb_30.bin']
