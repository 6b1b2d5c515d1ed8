"""The GPU path as far as a CPU checks it: the mmcv build's choice of CUDA or CPU ops (fake
toolkits and torches on PATH, no build), mixed precision on any device (bfloat16 on CPU),
MegaFace identification on a torch device, the device check's dry run. Tests named
``on_gpu`` need CUDA and run in ``tools/device_check.sh``."""
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, 'tools', 'setup', 'build_mmcv.sh')
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


# -- the mmcv build: CUDA or CPU ops -------------------------------------------------------------

def _script(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('#!/usr/bin/env bash\n' + text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _fake_venv(tmp_path, torch_cuda='13.0', gpu_archs='', headers=True):
    """A venv whose python answers the build script's torch probe, and the site-packages of
    torch's CUDA wheels (nvidia/cu13/include with the math libraries' headers)."""
    site = tmp_path / 'site'
    if headers:
        include = site / 'nvidia' / 'cu13' / 'include'
        include.mkdir(parents=True)
        for header in ('cublas_v2.h', 'cusparse.h', 'cusolverDn.h'):
            (include / header).write_text('')
    venv = tmp_path / 'venv'
    _script(str(venv / 'bin' / 'python'),
            'if [ "${1:-}" = -c ]; then echo 2.14.1+cpu; exit 0; fi\ncat > /dev/null\n'
            f'echo torch_cuda={torch_cuda}\necho gpu_archs={gpu_archs}\necho site={site}\n')
    return str(venv), str(site)


def _fake_toolkit(tmp_path, release='13.0', runtime_header=True, name='cuda'):
    """A CUDA toolkit folder (bin/nvcc answering --version and --dryrun) and an nvcc wrapper
    on PATH outside it, as /usr/local/bin/nvcc is on this machine."""
    home = tmp_path / name
    (home / 'include').mkdir(parents=True)
    if runtime_header:
        (home / 'include' / 'cuda_runtime.h').write_text('')
    _script(str(home / 'bin' / 'nvcc'),
            f'case "$1" in --version) echo "Cuda compilation tools, release {release}, V{release}.88" ;;\n'
            f'  --dryrun) echo "#\\$ TOP={home}/bin/.." >&2 ;; esac\n')
    wrapper_dir = tmp_path / f'{name}-wrapper'
    _script(str(wrapper_dir / 'nvcc'), f'exec {home}/bin/nvcc "$@"\n')
    return str(home), str(wrapper_dir)


def _build(venv, wheel_dir, path=(), dry_run=True, **env):
    """Run the build script with PATH = path + the system's folders (no real nvcc) and only
    the given CUDA variables."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ('CUDA_HOME', 'CUDA_PATH', 'TORCH_CUDA_ARCH_LIST', 'TOPONET_MMCV_OPS')}
    full_env['PATH'] = os.pathsep.join([*path, '/usr/bin', '/bin'])
    full_env.update(env)
    cmd = ['bash', BUILD] + (['--dry-run'] if dry_run else []) + [venv, str(wheel_dir)]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120)


def _selection(result):
    assert result.returncode == 0, result.stderr
    return dict(line.split(': ', 1) for line in result.stdout.splitlines())


@pytest.fixture
def no_system_nvcc():
    if shutil.which('nvcc', path='/usr/bin:/bin'):
        pytest.skip('this machine has nvcc in /usr/bin')


def test_mmcv_build_uses_cpu_ops_for_a_cpu_torch(tmp_path, no_system_nvcc):
    venv, _ = _fake_venv(tmp_path, torch_cuda='')
    _, wrapper = _fake_toolkit(tmp_path)
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper]))
    assert sel['variant'] == 'cpu' and 'CPU build' in sel['reason'] and sel['build_tag'] == '0cpu'


def test_mmcv_build_uses_cpu_ops_without_a_cuda_compiler(tmp_path, no_system_nvcc):
    venv, _ = _fake_venv(tmp_path, gpu_archs='9.0')
    sel = _selection(_build(venv, tmp_path / 'wheels'))
    assert sel['variant'] == 'cpu' and 'nvcc is not on PATH' in sel['reason']
    sel = _selection(_build(venv, tmp_path / 'wheels', CUDA_HOME=str(tmp_path / 'nowhere')))
    assert sel['variant'] == 'cpu' and 'has no bin/nvcc' in sel['reason']


def test_mmcv_build_refuses_an_nvcc_of_another_major_version(tmp_path, no_system_nvcc):
    venv, _ = _fake_venv(tmp_path, gpu_archs='9.0')
    _, wrapper = _fake_toolkit(tmp_path, release='12.4')
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper]))
    assert sel['variant'] == 'cpu' and "nvcc 12.4" in sel['reason'] and "torch's CUDA 13.0" in sel['reason']


def test_mmcv_build_uses_cuda_ops_for_the_visible_gpus(tmp_path, no_system_nvcc):
    venv, site = _fake_venv(tmp_path, gpu_archs='9.0')
    home, wrapper = _fake_toolkit(tmp_path)
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper]))
    # the toolkit is where nvcc says it lives, not beside the wrapper on PATH
    assert sel['variant'] == 'cuda' and sel['cuda_home'] == os.path.realpath(home)
    assert sel['arch_list'] == '9.0' and sel['build_tag'] == '1cu130_sm90'
    # torch's CUDA wheels bring the math libraries' headers the toolkit lacks
    assert sel['extra_include'] == os.path.join(site, 'nvidia', 'cu13', 'include')
    assert sel['wheel'].startswith('none (would build mmcv-2.1.0-1cu130_sm90-')
    # CUDA_HOME names the toolkit directly
    sel = _selection(_build(venv, tmp_path / 'wheels', CUDA_HOME=home))
    assert sel['variant'] == 'cuda' and sel['nvcc'].startswith(os.path.join(home, 'bin', 'nvcc'))


def test_mmcv_build_needs_an_architecture(tmp_path, no_system_nvcc):
    venv, _ = _fake_venv(tmp_path, gpu_archs='')
    _, wrapper = _fake_toolkit(tmp_path)
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper]))
    assert sel['variant'] == 'cpu' and 'TORCH_CUDA_ARCH_LIST' in sel['reason']
    # the override builds for GPUs this machine does not have; it wins over visible ones too
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper], TORCH_CUDA_ARCH_LIST='9.0+PTX;8.0'))
    assert sel['variant'] == 'cuda' and sel['build_tag'] == '1cu130_sm80_sm90ptx'


def test_mmcv_build_needs_the_toolkits_headers(tmp_path, no_system_nvcc):
    venv, _ = _fake_venv(tmp_path, gpu_archs='9.0')
    _, wrapper = _fake_toolkit(tmp_path, runtime_header=False)
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper]))
    assert sel['variant'] == 'cpu' and 'cuda_runtime.h' in sel['reason']
    venv, _ = _fake_venv(tmp_path / 'bare', gpu_archs='9.0', headers=False)
    _, wrapper = _fake_toolkit(tmp_path / 'bare')
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper]))
    assert sel['variant'] == 'cpu' and 'cublas_v2.h' in sel['reason']


def test_mmcv_build_variant_can_be_forced(tmp_path, no_system_nvcc):
    venv, _ = _fake_venv(tmp_path, gpu_archs='9.0')
    _, wrapper = _fake_toolkit(tmp_path)
    sel = _selection(_build(venv, tmp_path / 'wheels', [wrapper], TOPONET_MMCV_OPS='cpu'))
    assert sel['variant'] == 'cpu' and sel['reason'] == 'TOPONET_MMCV_OPS=cpu'
    forced = _build(venv, tmp_path / 'wheels', TOPONET_MMCV_OPS='cuda')  # no nvcc on PATH
    assert forced.returncode == 1 and 'not usable: no CUDA compiler' in forced.stderr
    assert _build(venv, tmp_path / 'wheels', TOPONET_MMCV_OPS='gpu').returncode == 2


def test_mmcv_wheel_names_record_the_variant(tmp_path, no_system_nvcc):
    venv, _ = _fake_venv(tmp_path, gpu_archs='9.0')
    _, wrapper = _fake_toolkit(tmp_path)
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    legacy = wheels / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'  # built before variants were named
    legacy.write_bytes(b'')
    assert _selection(_build(venv, wheels, TOPONET_MMCV_OPS='cpu'))['wheel'] == str(legacy)
    # a GPU machine does not take the CPU wheel for its CUDA build
    assert _selection(_build(venv, wheels, [wrapper]))['wheel'].startswith('none')
    cuda_wheel = wheels / 'mmcv-2.1.0-1cu130_sm90-cp311-cp311-linux_x86_64.whl'
    cuda_wheel.write_bytes(b'')
    assert _selection(_build(venv, wheels, [wrapper]))['wheel'] == str(cuda_wheel)
    tagged_cpu = wheels / 'mmcv-2.1.0-0cpu-cp311-cp311-linux_x86_64.whl'
    tagged_cpu.write_bytes(b'')
    assert _selection(_build(venv, wheels, TOPONET_MMCV_OPS='cpu'))['wheel'] == str(tagged_cpu)
    # another architecture is another build
    other = _selection(_build(venv, wheels, [wrapper], TORCH_CUDA_ARCH_LIST='8.6'))
    assert other['wheel'].startswith('none (would build mmcv-2.1.0-1cu130_sm86-')
    # a real run with the wheel cached builds nothing: stdout is the wheel's path alone
    result = _build(venv, wheels, [wrapper], dry_run=False)
    assert result.returncode == 0 and result.stdout == f'{cuda_wheel}\n', result.stderr
    assert 'already built' in result.stderr


def test_mmcv_build_on_this_machine(tmp_path):
    # the project venv's real torch and whatever CUDA compiler this machine has
    venv = os.path.join(ROOT, '.venv')
    if not os.path.isfile(os.path.join(venv, 'bin', 'python')):
        pytest.skip('no project venv')
    cache = os.path.expanduser('~/.cache/toponet/wheels')
    result = subprocess.run(['bash', BUILD, '--dry-run', venv, cache], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != 'TORCH_CUDA_ARCH_LIST'})
    sel = _selection(result)
    if not torch.cuda.is_available():
        # CI machines have no GPU: CPU ops, and the CPU wheel already built here is the one used
        assert sel['variant'] == 'cpu'
        legacy = sorted(p for p in os.listdir(cache) if p.startswith('mmcv-2.1.0-cp')) if os.path.isdir(cache) else []
        tagged = sorted(p for p in os.listdir(cache) if p.startswith('mmcv-2.1.0-0cpu-')) if os.path.isdir(cache) else []
        if tagged or legacy:
            assert sel['wheel'] == os.path.join(cache, (tagged or legacy)[0])
    if shutil.which('nvcc') and torch.version.cuda:
        sel = _selection(subprocess.run(['bash', BUILD, '--dry-run', venv, str(tmp_path)], capture_output=True,
                                        text=True, timeout=120, env=dict(os.environ, TORCH_CUDA_ARCH_LIST='9.0')))
        if sel['variant'] == 'cuda':
            assert os.path.isfile(os.path.join(sel['cuda_home'], 'include', 'cuda_runtime.h'))
            assert sel['build_tag'] == f'1cu{torch.version.cuda.replace(".", "")}_sm90'


# -- mixed precision on any device ----------------------------------------------------------------

def test_amp_dtype_and_autocast_on_cpu():
    from backbones.amp import amp_dtype, autocast
    assert amp_dtype('cpu') is torch.bfloat16
    x = torch.ones(2, 2)
    with autocast('cpu'):
        assert torch.mm(x, x).dtype is torch.bfloat16
    with autocast('cpu', enabled=False):
        assert torch.mm(x, x).dtype is torch.float32


def test_runner_config_for_amp():
    from mmengine.config import Config
    from backbones.amp import use_runner_amp
    cfg = Config(dict(optim_wrapper=dict(type='TopologySparsityOptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
                      val_cfg=dict(), test_cfg=dict(type='TestLoop'), train_cfg=dict(type='EpochBasedTrainLoop')))
    assert use_runner_amp(cfg, 'cpu') is torch.bfloat16
    assert cfg.optim_wrapper.type == 'TopologySparsityAmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.optim_wrapper.loss_scale == dict(enabled=False)  # bfloat16 needs no loss scaling
    assert cfg.val_cfg.fp16 is True and cfg.test_cfg.fp16 is True and 'fp16' not in cfg.train_cfg
    # a plain wrapper, a dtype the config chose (float16: scaled), a loop of the config's own
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', dtype='float16', optimizer=dict(type='SGD', lr=0.1)),
                      val_cfg=dict(type='MyValLoop')))
    use_runner_amp(cfg, 'cpu')
    assert cfg.optim_wrapper.type == 'DeviceAmpOptimWrapper' and cfg.optim_wrapper.dtype == 'float16'
    assert 'loss_scale' not in cfg.optim_wrapper and 'fp16' not in cfg.val_cfg


def _tiny_classifier():
    import timm
    import backbones  # noqa: F401
    return timm.create_model('toponet_fmnist_complete')


@pytest.mark.parametrize('wrapper', ['TopologySparsityAmpOptimWrapper', 'DeviceAmpOptimWrapper'])
def test_amp_optim_wrappers_train_on_this_device(wrapper):
    from mmengine.device import get_device
    from mmengine.optim import build_optim_wrapper
    from backbones.amp import amp_dtype
    device = get_device()
    model = _tiny_classifier().to(device)
    cfg = dict(type=wrapper, dtype=str(amp_dtype(device)).split('.')[-1],
               optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
               constructor='TopologyOptimWrapperConstructor')
    if wrapper.startswith('Topology'):
        cfg['sparsity'] = dict(mode='adaptive', lam=1e-4)
    if cfg['dtype'] == 'bfloat16':
        cfg['loss_scale'] = dict(enabled=False)
    optim_wrapper = build_optim_wrapper(model, cfg)  # mmengine's own wrapper refuses CPU here
    before = model.stages[0].edge_weights.detach().clone()
    x, y = torch.randn(4, 1, 28, 28, device=device), torch.tensor([0, 1, 2, 3], device=device)
    with optim_wrapper.optim_context(model):
        logits = model(x)
    assert logits.dtype is amp_dtype(device)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    optim_wrapper.update_params(loss)
    after = model.stages[0].edge_weights.detach()
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    optim_wrapper.load_state_dict(optim_wrapper.state_dict())  # resumable


def test_amp_on_cpu_refuses_float16():
    from mmengine.device import get_device
    from mmengine.optim import build_optim_wrapper
    if get_device() != 'cpu':
        pytest.skip('checks the CPU path')
    with pytest.raises(ValueError, match='bfloat16 only'):
        build_optim_wrapper(_tiny_classifier(), dict(type='DeviceAmpOptimWrapper', dtype='float16',
                                                     optimizer=dict(type='SGD', lr=0.1)))


def _face_model():
    from face.model import FaceTopoNet
    torch.manual_seed(0)
    return FaceTopoNet(channels=8, nodes=(4, 4, 4, 4), input_size=32, embedding_size=32, dropout=0.0).eval()


def test_face_features_under_autocast():
    from face.verification import extract_features
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    model = _face_model()
    exact = extract_features(model, images, batch_size=3)
    mixed = extract_features(model, images, batch_size=3, amp=True)
    assert mixed.dtype == np.float32 and np.allclose(np.linalg.norm(mixed, axis=1), 1, atol=1e-5)
    cosine = (exact * mixed).sum(1)
    assert not np.array_equal(exact, mixed) and cosine.min() > 0.98  # bfloat16, close to float32


def test_feature_cache_of_mixed_precision_features_is_its_own(tmp_path):
    import hashlib
    from face.megaface import feature_cache_dir, file_sha256
    listing = tmp_path / 'list.json'
    listing.write_text('{"path": ["a.jpg"]}')
    folder, manifest = feature_cache_dir(str(tmp_path), 'megaface', 'c' * 64, str(listing))
    mixed, mixed_manifest = feature_cache_dir(str(tmp_path), 'megaface', 'c' * 64, str(listing), precision='bfloat16')
    assert folder != mixed and mixed_manifest['precision'] == 'bfloat16'
    # float32 features keep the folders they were cached in before precisions were recorded
    key = hashlib.sha256(f'{"c" * 64}\n{file_sha256(str(listing))}\n_toponet.bin'.encode()).hexdigest()[:16]
    assert folder == os.path.join(str(tmp_path), f'megaface_{key}') and manifest['precision'] == 'float32'


# -- MegaFace identification on a torch device ------------------------------------------------------

def _identification_case(seed):
    rng = np.random.default_rng(seed)
    num_probes, num_distractors = int(rng.integers(6, 40)), int(rng.integers(30, 300))
    # small integer features: every dot product is exact and ties abound
    probes = rng.integers(-2, 3, (num_probes, 5)).astype(np.float32)
    distractors = rng.integers(-2, 3, (num_distractors, 5)).astype(np.float32)
    labels = np.concatenate([[0, 0], rng.integers(0, 5, num_probes - 2)])
    removed = rng.random(num_distractors) < 0.1
    sizes = sorted({1, 7, num_distractors // 2, num_distractors})
    return probes, labels, distractors, removed, sizes, int(rng.integers(1, 64))


def _check_identify_on(device):
    from face.megaface import identify, identify_brute_force
    for seed in range(4):
        probes, labels, distractors, removed, sizes, chunk = _identification_case(seed)
        for far in (None, 1e-3, 0.05, 0.5):
            kwargs = dict(sizes=sizes, max_rank=6, far=far, removed=removed)
            on_device = identify(probes, labels, distractors, chunk_size=chunk, device=device, **kwargs)
            slow = identify_brute_force(probes, labels, distractors, **kwargs)
            for size in sizes:
                assert np.array_equal(on_device.cmc[size], slow.cmc[size]), (seed, far, size)
            assert on_device.tar == slow.tar and on_device.threshold == slow.threshold
            assert on_device.to_dict() == identify(probes, labels, distractors, chunk_size=chunk, **kwargs).to_dict()


def test_identify_on_a_torch_device_equals_brute_force():
    _check_identify_on('cpu')  # the torch path, on the device that is here


# -- the device check ---------------------------------------------------------------------------

def test_device_prep_lists_the_pinned_wheels():
    result = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'device_prep.sh'), '--print'], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    specs = result.stdout.split()
    for pin in ('timm==1.0.31', 'mmengine==0.10.7', 'insightface==2.1', 'mmdet==3.3.0'):
        assert pin in specs
    assert not any(spec.split('==')[0] in ('torch', 'torchvision', 'triton', 'numpy') for spec in specs)


def test_device_check_dry_run(tmp_path):
    script = os.path.join(ROOT, 'tools', 'device_check.sh')
    bad = subprocess.run(['bash', script, '--dry-run', '--only', 'cls,nope'], capture_output=True, text=True)
    assert bad.returncode == 2 and 'unknown step nope' in bad.stderr
    result = subprocess.run(['bash', script, '--dry-run', '--only', 'env,cuda_tests', '--out-dir', str(tmp_path),
                             '--python', sys.executable], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.load(open(tmp_path / 'summary.json'))
    assert summary['dry_run'] is True and summary['device'] == 'cpu' and summary['passed'] is True
    steps = summary['steps']
    assert [steps[name]['status'] for name in ('setup', 'env', 'cuda_tests')] == ['passed'] * 3
    assert steps['env']['result']['torch'] == torch.__version__
    counts = steps['cuda_tests']['result']
    assert counts['tests'] >= 4 and counts['failures'] == 0 and counts['errors'] == 0
    if not torch.cuda.is_available():
        assert counts['skipped'] == counts['tests']
    assert 'cls' not in steps and (tmp_path / 'device_check.log').is_file()


# -- on a GPU (tools/device_check.sh) ---------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize('num_rows, numel', [(1, 7), (5, 2048), (9, 5003), (40, 1 << 16)])
def test_triton_row_sum_on_gpu_matches_a_float64_reference(num_rows, numel):
    from backbones.aggregation import weighted_row_sum
    torch.manual_seed(num_rows)
    buffer = torch.randn(num_rows + 2, numel, dtype=torch.float64, device='cuda')
    coeffs = torch.randn(num_rows + 2, dtype=torch.float64, device='cuda')
    rows, run = buffer[1:num_rows + 1], coeffs[1:num_rows + 1]  # a run of rows inside a buffer, as a gather reads
    expected = (run[:, None] * rows).sum(0)
    torch.testing.assert_close(weighted_row_sum(rows, run), expected, rtol=1e-12, atol=1e-12)
    single = weighted_row_sum(rows.float(), run.float())  # float32 rows, float32 accumulator
    assert single.dtype is torch.float32
    torch.testing.assert_close(single.double(), expected, rtol=1e-5, atol=1e-5 * num_rows)


@needs_cuda
def test_identify_on_gpu_equals_brute_force():
    _check_identify_on('cuda')


@needs_cuda
def test_amp_train_steps_on_gpu():
    from backbones.amp import amp_dtype
    if torch.cuda.get_device_capability()[0] >= 8:
        assert amp_dtype('cuda') is torch.bfloat16
    test_amp_optim_wrappers_train_on_this_device('TopologySparsityAmpOptimWrapper')


@needs_cuda
def test_face_features_on_gpu_match_the_cpu():
    from face.verification import extract_features
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    model = _face_model()
    on_cpu = extract_features(model, images, batch_size=4)
    on_gpu = extract_features(model.cuda(), images, batch_size=4)
    assert np.abs(on_cpu - on_gpu).max() < 1e-4
    mixed = extract_features(model, images, batch_size=4, amp=True)
    assert (on_cpu * mixed).sum(1).min() > 0.98
