"""Side-by-side speed and memory measurements (the performance issue's benchmarks).

Every measurement runs in its own subprocess, so peak memory is that of one model and one
mode only: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's
resident-set high-water mark (``VmHWM``) over its size after building the model and the
input, i.e. the activations, gradients and optimizer state one step adds.

Times are medians over ``runs`` timed repetitions after ``warmup`` untimed ones; CUDA work
is synchronised before every clock read. Results are reported as ratios of a candidate to
its reference, measured in the same invocation on the same machine.

``runtime='onnxruntime'`` measures the network's ONNX export in onnxruntime's CPU provider
instead (``backbones.export.export_onnx`` for our networks: the inference form, checked
against PyTorch before it is timed; ``torch.onnx.export`` for any other timm model), and
``profile_ops`` then lists onnxruntime's node types by time.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import torch

__all__ = ['BenchSpec', 'BenchResult', 'machine_info', 'run_in_subprocess', 'measure', 'compare', 'profile_ops',
           'profile_in_subprocess', 'RUNTIMES']

RUNTIMES = ('torch', 'onnxruntime')


@dataclass(frozen=True)
class BenchSpec:
    """One measurement: a timm model in a mode on a device.

    Args:
        model (str): timm model name (``backbones`` is imported first, so ours resolve).
        mode (str): ``'train'`` (forward, cross-entropy, backward, SGD step) or ``'infer'``
            (eval mode, ``torch.inference_mode``).
        batch_size (int): Images per step.
        img_size (int): Square input side.
        device (str): ``'cpu'`` or ``'cuda'``.
        channels_last (bool): Model and input in NHWC memory format.
        amp (bool): bfloat16 autocast on CPU, float16 on CUDA.
        runs (int): Timed repetitions (the median is reported).
        warmup (int): Untimed repetitions first.
        threads (int, optional): ``torch.set_num_threads`` for the CPU.
        model_kwargs (dict): Extra ``timm.create_model`` arguments.
        grad_checkpointing (bool): Recompute each stage in backward (``set_grad_checkpointing``).
        env (dict): Environment variables of the measuring subprocess.
        runtime (str): ``'torch'`` (eager PyTorch) or ``'onnxruntime'`` (inference only:
            the ONNX export in onnxruntime's CPU provider).
        reparameterize (bool): Eager inference with batch norms folded (``reparameterize()``).
        checkpoint (str, optional): Build the network from this shared checkpoint
            (``create_model_from_checkpoint``) instead of ``model``; ``model`` is a label.
        export (dict): Arguments of ``backbones.export.export_onnx`` (``aggregation``,
            ``keep_ratio``, ``criterion``, ``fold_bn``) for ``runtime='onnxruntime'``.
    """

    model: str
    mode: str = 'train'
    batch_size: int = 16
    img_size: int = 224
    device: str = 'cpu'
    channels_last: bool = True
    amp: bool = False
    runs: int = 5
    warmup: int = 2
    threads: Optional[int] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool = False
    env: Dict[str, str] = field(default_factory=dict)
    runtime: str = 'torch'
    reparameterize: bool = False
    checkpoint: Optional[str] = None
    export: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in ('train', 'infer'):
            raise ValueError(f"mode must be 'train' or 'infer', got {self.mode!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f'runtime must be one of {RUNTIMES}, got {self.runtime!r}')
        if self.runtime == 'onnxruntime' and (self.mode != 'infer' or self.device != 'cpu'):
            raise ValueError(f"runtime 'onnxruntime' measures CPU inference, got mode={self.mode!r} "
                             f"device={self.device!r}")
        if self.reparameterize and self.mode != 'infer':
            raise ValueError('reparameterize (folded batch norms) is for inference only')
        if self.device not in ('cpu', 'cuda'):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        for name in ('batch_size', 'img_size', 'runs'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.warmup < 0:
            raise ValueError(f'warmup must be >= 0, got {self.warmup}')


@dataclass
class BenchResult:
    spec: BenchSpec
    median_s: float
    times_s: List[float]
    peak_mem_mb: float
    images_per_s: float


def machine_info() -> Dict[str, Any]:
    """Machine and library versions, printed at the top of every benchmark report."""
    import timm

    info = {
        'python': platform.python_version(), 'torch': torch.__version__, 'timm': timm.__version__,
        'platform': platform.platform(), 'cpu': _cpu_name(), 'cpu_count': os.cpu_count(),
        'torch_threads': torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info['cuda'] = torch.version.cuda
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def _rss_kb(field_name: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field_name} not found in /proc/self/status')


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _build_step(spec: BenchSpec):
    """The model of ``spec`` and a closure running one step of it."""
    import timm
    import backbones  # noqa: F401  (registers our models)

    if spec.threads:
        torch.set_num_threads(spec.threads)
    if spec.device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('device cuda requested but CUDA is not available')
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    if spec.runtime == 'onnxruntime':
        return _build_onnxruntime_step(spec)
    memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = _create_model(spec)
    if spec.reparameterize:
        model.eval().reparameterize()
    model = model.to(spec.device, memory_format=memory_format)
    if spec.grad_checkpointing:
        model.set_grad_checkpointing(True)
    in_chans = model.pretrained_cfg.get('input_size', (3,))[0]
    x = torch.randn(spec.batch_size, in_chans, spec.img_size, spec.img_size, device=spec.device)
    x = x.contiguous(memory_format=memory_format)
    target = torch.randint(0, model.num_classes, (spec.batch_size,), device=spec.device)
    amp_dtype = torch.float16 if spec.device == 'cuda' else torch.bfloat16
    scaler = torch.amp.GradScaler('cuda', enabled=spec.amp and spec.device == 'cuda')

    if spec.mode == 'train':
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            with torch.autocast(spec.device, dtype=amp_dtype, enabled=spec.amp):
                loss = torch.nn.functional.cross_entropy(model(x), target)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.inference_mode(), torch.autocast(spec.device, dtype=amp_dtype, enabled=spec.amp):
                model(x)

    return model, step


def _create_model(spec: BenchSpec):
    import timm
    if spec.checkpoint:
        from .checkpoint import create_model_from_checkpoint
        return create_model_from_checkpoint(spec.checkpoint, **spec.model_kwargs)
    return timm.create_model(spec.model, **spec.model_kwargs)


def _onnx_session(spec: BenchSpec, path: str, profile: bool = False):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if spec.threads:
        options.intra_op_num_threads = spec.threads
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(os.path.dirname(path), 'ort_profile')
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _build_onnxruntime_step(spec: BenchSpec, profile: bool = False):
    """Export the network of ``spec`` to a temporary ONNX file and return ``(session, step)``."""
    import tempfile
    import warnings

    import numpy as np

    from .sparsity import dag_stages

    model = _create_model(spec).eval()
    stages = list(dag_stages(model))
    if stages and not spec.checkpoint:
        # an untrained network has every alpha at exactly 1, which the inference form adds
        # without scaling: give it values as after training
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            for stage in stages:
                if stage.edge_weights.requires_grad:
                    stage.edge_weights.copy_(torch.rand(stage.edge_weights.shape, generator=generator) + 0.5)
    folder = tempfile.mkdtemp(prefix='toponet-bench-')
    path = os.path.join(folder, 'model.onnx')
    in_chans = getattr(model, 'in_chans', None) or model.pretrained_cfg.get('input_size', (3,))[0]
    if stages:
        from .export import export_onnx
        export_onnx(model, path, batch_size=2, img_size=spec.img_size, **spec.export)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            x = torch.randn(2, in_chans, spec.img_size, spec.img_size)
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=['images'], output_names=['logits'],
                                        dynamic_shapes=({0: torch.export.Dim('batch', min=1)},), verbose=False)
            program.save(path)
    session = _onnx_session(spec, path, profile=profile)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((spec.batch_size, in_chans, spec.img_size, spec.img_size),
                                                 dtype=np.float32)

    def step():
        session.run(None, {name: x})

    return session, step


def measure(spec: BenchSpec) -> BenchResult:
    """Run ``spec`` in this process (``run_in_subprocess`` isolates peak memory)."""
    _model, step = _build_step(spec)
    _sync(spec.device)
    if spec.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kb('VmRSS')
    times = []
    for i in range(spec.warmup + spec.runs):
        _sync(spec.device)
        start = time.perf_counter()
        step()
        _sync(spec.device)
        if i >= spec.warmup:
            times.append(time.perf_counter() - start)
    if spec.device == 'cuda':
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        peak_mb = (_rss_kb('VmHWM') - base) / 2 ** 10
    median = statistics.median(times)
    return BenchResult(spec=spec, median_s=median, times_s=times, peak_mem_mb=max(peak_mb, 0.0),
                       images_per_s=spec.batch_size / median)


def _run_python(code: str, args, marker: str, spec: BenchSpec, timeout: float, what: str):
    """Run ``code`` in a fresh interpreter with ``spec.env``; returns the JSON after ``marker``."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get('PYTHONPATH', ''), **spec.env)
    proc = subprocess.run([sys.executable, '-c', code, json.dumps(asdict(spec)), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=repo)
    for line in proc.stdout.splitlines():
        if line.startswith(marker + ' '):
            return json.loads(line[len(marker) + 1:])
    raise RuntimeError(f'{what} of {spec} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}')


def run_in_subprocess(spec: BenchSpec, timeout: float = 1800.0) -> BenchResult:
    """``measure(spec)`` in a fresh interpreter; raises with its stderr if it fails."""
    code = ('import json, sys; from backbones.benchmark import BenchSpec, measure; from dataclasses import asdict; '
            'r = measure(BenchSpec(**json.loads(sys.argv[1]))); '
            'print("BENCH_RESULT " + json.dumps(asdict(r)))')
    data = _run_python(code, (), 'BENCH_RESULT', spec, timeout, 'benchmark')
    data['spec'] = BenchSpec(**data['spec'])
    return BenchResult(**data)


def compare(candidate: BenchResult, reference: BenchResult) -> Dict[str, float]:
    """Ratios candidate / reference: time per step, peak memory, throughput."""
    return {
        'time_ratio': candidate.median_s / reference.median_s,
        'memory_ratio': (candidate.peak_mem_mb / reference.peak_mem_mb) if reference.peak_mem_mb else float('nan'),
        'throughput_ratio': candidate.images_per_s / reference.images_per_s,
    }


def profile_ops(spec: BenchSpec, steps: int = 3, top: int = 15) -> List[Dict[str, Any]]:
    """Where a step's time goes: the ``top`` aten ops by self time per step (device time on
    CUDA, CPU time otherwise), after ``spec.warmup`` untimed steps, under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    if spec.runtime == 'onnxruntime':
        return _profile_onnxruntime(spec, steps, top)
    _model, step = _build_step(spec)
    for _ in range(max(1, spec.warmup)):
        step()
    _sync(spec.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if spec.device == 'cuda' else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(spec.device)
    rows = []
    for event in prof.key_averages():
        if not event.key.startswith('aten::'):
            continue
        if spec.device == 'cuda':
            self_us = getattr(event, 'self_device_time_total', None)
            if self_us is None:  # torch < 2.4
                self_us = event.self_cuda_time_total
        else:
            self_us = event.self_cpu_time_total
        if self_us > 0:
            rows.append({'op': event.key, 'ms_per_step': self_us / 1e3 / steps, 'calls_per_step': event.count / steps})
    rows.sort(key=lambda r: -r['ms_per_step'])
    total = sum(r['ms_per_step'] for r in rows)
    for r in rows:
        r['share'] = r['ms_per_step'] / total if total else 0.0
    return rows[:top]


def _onnxruntime_kind(args: Dict[str, Any]) -> str:
    """A profiled node's type; convolutions by what they do (from the weight's shape)."""
    op = args.get('op_name', 'unknown')
    shapes = [next(iter(s.values())) for s in args.get('input_type_shape', []) if s]
    if op != 'Conv' or len(shapes) < 2 or len(shapes[1]) != 4:
        return op
    out_chs, in_per_group, kh, kw = shapes[1]
    summed = ' + sum' if any(len(shape) == 4 for shape in shapes[2:]) else ''  # a fused Add's input (4-D)
    if in_per_group == 1 and kh == kw == 1:
        return 'Conv 1x1 per-channel (alpha scaling / BN)' + summed
    if in_per_group == 1:
        return f'Conv {kh}x{kw} depthwise' + summed
    return f'Conv {kh}x{kw}' + summed


def _profile_onnxruntime(spec: BenchSpec, steps: int, top: int) -> List[Dict[str, Any]]:
    """onnxruntime's own profile: time per step by node type (``op_name`` of each executed
    node: a blocked-layout convolution shows as ``Conv``, a layout change as ``ReorderInput``
    or ``ReorderOutput``), over the last ``steps`` of ``warmup + steps`` runs."""
    session, step = _build_onnxruntime_step(spec, profile=True)
    for _ in range(max(1, spec.warmup) + steps):
        step()
    with open(session.end_profiling()) as f:
        events = json.load(f)
    per_node: Dict[str, List[float]] = {}
    kinds: Dict[str, str] = {}
    for event in events:
        if event.get('cat') == 'Node' and event.get('name', '').endswith('_kernel_time'):
            per_node.setdefault(event['name'], []).append(event['dur'])
            kinds[event['name']] = _onnxruntime_kind(event.get('args', {}))
    totals: Dict[str, Dict[str, float]] = {}
    for node, durations in per_node.items():
        row = totals.setdefault(kinds[node], {'us': 0.0, 'nodes': 0})
        row['us'] += sum(durations[-steps:])
        row['nodes'] += 1
    rows = [{'op': op, 'ms_per_step': v['us'] / 1e3 / steps, 'calls_per_step': v['nodes']} for op, v in totals.items()]
    rows.sort(key=lambda r: -r['ms_per_step'])
    total = sum(r['ms_per_step'] for r in rows)
    for r in rows:
        r['share'] = r['ms_per_step'] / total if total else 0.0
    return rows[:top]


def profile_in_subprocess(spec: BenchSpec, steps: int = 3, top: int = 15, timeout: float = 1800.0):
    """``profile_ops`` in a fresh interpreter."""
    code = ('import json, sys; from backbones.benchmark import BenchSpec, profile_ops; '
            'rows = profile_ops(BenchSpec(**json.loads(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])); '
            'print("PROFILE_RESULT " + json.dumps(rows))')
    return _run_python(code, (steps, top), 'PROFILE_RESULT', spec, timeout, 'profile')
