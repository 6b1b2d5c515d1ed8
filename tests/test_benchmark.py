import pytest

from backbones.benchmark import BenchResult, BenchSpec, compare, machine_info, measure, profile_ops


def test_spec_validation():
    with pytest.raises(ValueError, match="mode must be 'train' or 'infer', got 'eval'"):
        BenchSpec(model='toponet_fmnist_complete', mode='eval')
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        BenchSpec(model='toponet_fmnist_complete', device='tpu')
    with pytest.raises(ValueError, match='batch_size must be >= 1, got 0'):
        BenchSpec(model='toponet_fmnist_complete', batch_size=0)


@pytest.mark.parametrize('mode', ['train', 'infer'])
def test_measure_small_model(mode):
    spec = BenchSpec(model='toponet_fmnist_complete', mode=mode, batch_size=4, img_size=28, runs=2, warmup=1,
                     model_kwargs={'aggregation': 'stacked'})
    result = measure(spec)
    assert len(result.times_s) == 2 and all(t > 0 for t in result.times_s)
    assert result.median_s == pytest.approx(sorted(result.times_s)[0] / 2 + sorted(result.times_s)[1] / 2)
    assert result.images_per_s == pytest.approx(4 / result.median_s)
    assert result.peak_mem_mb >= 0


def test_compare_is_candidate_over_reference():
    spec = BenchSpec(model='x')
    ref = BenchResult(spec, median_s=2.0, times_s=[2.0], peak_mem_mb=100.0, images_per_s=8.0)
    cand = BenchResult(spec, median_s=3.0, times_s=[3.0], peak_mem_mb=125.0, images_per_s=16 / 3)
    ratios = compare(cand, ref)
    assert ratios['time_ratio'] == pytest.approx(1.5)
    assert ratios['memory_ratio'] == pytest.approx(1.25)
    assert ratios['throughput_ratio'] == pytest.approx(2 / 3)


def test_machine_info_names_versions():
    info = machine_info()
    assert {'python', 'torch', 'timm', 'cpu', 'cpu_count'} <= set(info)


def test_profile_ops_lists_the_step_s_aten_ops_by_time():
    spec = BenchSpec(model='toponet_fmnist_complete', batch_size=4, img_size=28, runs=1, warmup=1)
    rows = profile_ops(spec, steps=1, top=8)
    assert 0 < len(rows) <= 8 and all(r['op'].startswith('aten::') for r in rows)
    times = [r['ms_per_step'] for r in rows]
    assert times == sorted(times, reverse=True) and times[0] > 0
    assert 0 < sum(r['share'] for r in rows) <= 1 + 1e-9
    # a train step convolves forward and backward
    ops = {r['op'] for r in profile_ops(spec, steps=1, top=100)}
    assert 'aten::convolution_backward' in ops


def test_measure_with_gradient_checkpointing():
    from backbones.benchmark import _build_step
    spec = BenchSpec(model='toponet_fmnist_complete', batch_size=4, img_size=28, runs=1, warmup=1,
                     grad_checkpointing=True)
    model, step = _build_step(spec)
    assert model.grad_checkpointing is True
    step()
    assert measure(spec).median_s > 0


def test_onnxruntime_spec_validation():
    with pytest.raises(ValueError, match="runtime must be one of"):
        BenchSpec(model='toponet_fmnist_complete', mode='infer', runtime='tvm')
    with pytest.raises(ValueError, match="measures CPU inference"):
        BenchSpec(model='toponet_fmnist_complete', mode='train', runtime='onnxruntime')
    with pytest.raises(ValueError, match='inference only'):
        BenchSpec(model='toponet_fmnist_complete', mode='train', reparameterize=True)


def test_onnxruntime_measure_and_profile_by_node_kind():
    from backbones.benchmark import _build_onnxruntime_step
    spec = BenchSpec(model='toponet_fmnist_complete', mode='infer', runtime='onnxruntime', batch_size=3, img_size=28,
                     runs=2, warmup=1)
    result = measure(spec)
    assert len(result.times_s) == 2 and result.images_per_s == pytest.approx(3 / result.median_s)
    session, _ = _build_onnxruntime_step(spec)
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]  # the spec's size, dynamic batch
    rows = profile_ops(spec, steps=1, top=50)
    kinds = {r['op'] for r in rows}
    # the inference form: every edge weight is a per-channel 1x1 convolution, most with a fused sum
    import timm
    edges = sum(s.graph.num_edges for s in timm.create_model('toponet_fmnist_complete').stages)
    scaling = sum(r['calls_per_step'] for r in rows if r['op'].startswith('Conv 1x1 per-channel'))
    assert 'Conv 3x3 depthwise' in kinds and scaling >= edges
    assert 0 < sum(r['share'] for r in rows) <= 1 + 1e-9


def test_measure_eager_with_folded_batch_norm():
    import torch
    from backbones.benchmark import _build_step
    spec = BenchSpec(model='toponet_fmnist_complete', mode='infer', reparameterize=True, batch_size=2, img_size=28,
                     runs=1, warmup=1)
    model, step = _build_step(spec)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    step()
