import pytest

from backbones.benchmark import BenchResult, BenchSpec, compare, machine_info, measure


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
