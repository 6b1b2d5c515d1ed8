"""What every command line in ``tools/`` shares, following mmdet's and mmpretrain's tools.

* ``make_parser``: an ``argparse`` parser that shows every default in ``--help``, gives
  ``--debug`` and ``--verbose`` (the full mmengine log on the console as well as in the
  run's log file, ``backbones.console``) to every tool, and reports a bad flag as one
  ``error:`` line with exit status 2.
* Flag adders, one per concept, so every tool spells it the same way: ``add_config``
  (``CONFIG`` positional), ``add_work_dir``, ``add_out_dir``, ``add_cfg_options``,
  ``add_resume``, ``add_auto_scale_lr``, ``add_launcher`` (``--launcher``,
  ``--local-rank``), ``add_device``, ``add_amp``. ``--work-dir`` is the folder of an mmengine
  run (logs, checkpoints); ``--out-dir`` the folder a tool writes its results into;
  ``--out`` one output file.
* ``run_main``: runs a tool's ``main``; a user error (``InputError``, any other
  ``ValueError``, a missing, unreadable or misplaced file) becomes one line
  ``error: <message>`` on stderr and exit status 2, with the traceback only under
  ``--debug``. Anything else is a bug and propagates.
* ``print_result`` (the tool's last stdout line, one JSON object, also written to
  ``$TOPONET_RESULT_FILE`` when set) and ``rank0_print``: under ``torchrun`` only rank 0
  prints results.

Example:
    >>> parser = make_parser('Demo tool.')
    >>> add_device(parser)
    >>> parser.parse_args(['--device', 'cpu']).device
    'cpu'
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from typing import Callable, Optional, Sequence

from .errors import InputError

__all__ = ['USER_ERRORS', 'RESULT_FILE_ENV', 'make_parser', 'add_config', 'add_work_dir', 'add_out_dir', 'add_cfg_options',
           'add_resume', 'add_auto_scale_lr', 'add_launcher', 'add_device', 'add_amp', 'parse_device',
           'resolve_device', 'use_runner_device', 'default_out_dir', 'run_main', 'error_message', 'is_rank0',
           'rank0_print', 'print_result']

# A file every tool's result (its last stdout line) is also written to, when set.
RESULT_FILE_ENV = 'TOPONET_RESULT_FILE'

# Errors a user can fix: bad values and bad files. Everything else is a bug (traceback).
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
_DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every default in ``--help``; descriptions (module docstrings) keep their layout.

    A help text that already says ``default:`` in words keeps its own wording.
    """

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default:' in text:
            return text
        return super()._get_help_string(action)


class ToolParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error:`` line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def make_parser(description: str, prog: Optional[str] = None, epilog: Optional[str] = None) -> ToolParser:
    """A tool's parser: defaults shown in ``--help``, plus ``--debug`` and ``--verbose``.

    Args:
        description (str): What the tool does (a module docstring keeps its line breaks).
        prog (str, optional): The program name in usage lines (default: the script's name).
        epilog (str, optional): Text after the flag list.
    """
    parser = ToolParser(description=description, prog=prog, epilog=epilog, formatter_class=_HelpFormatter)
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback of an error instead of one error: line')
    parser.add_argument('--verbose', action=_VerboseAction,
                        help='show everything mmengine logs on the console too (environment, config, hooks, every '
                             "logging interval); the run's log file in its work dir always has it")
    return parser


class _VerboseAction(argparse.Action):
    """``--verbose``: the console gets everything the log file gets (``backbones.console``),
    in this process and the tools it starts."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .console import set_verbose
        setattr(namespace, self.dest, True)
        set_verbose(True)


def add_config(parser: argparse.ArgumentParser, help: str = 'mmengine config file') -> None:
    parser.add_argument('config', help=help)


def add_work_dir(parser: argparse.ArgumentParser,
                 help: str = 'folder of the run: logs and checkpoints (default: work_dirs/<config name>)') -> None:
    parser.add_argument('--work-dir', default=None, help=help)


def add_out_dir(parser: argparse.ArgumentParser, default: Optional[str] = None,
                help: str = 'folder the results are written into') -> None:
    parser.add_argument('--out-dir', default=default, help=help)


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None, metavar='KEY=VALUE',
                        help='override config keys, e.g. train_dataloader.batch_size=32 '
                             "model.backbone.seed=3 'train_cfg.max_epochs=2'")


def add_resume(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume training: from the latest checkpoint in the work dir when no CKPT is given, '
                             'from CKPT otherwise')


def add_auto_scale_lr(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the learning rate by the actual batch size over the config's "
                             'auto_scale_lr.base_batch_size')


class _LocalRankAction(argparse.Action):
    """``--local-rank N`` (what ``torch.distributed.launch`` passes) sets ``LOCAL_RANK``."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        os.environ.setdefault('LOCAL_RANK', str(values))


def add_launcher(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--launcher', choices=LAUNCHERS, default=None,
                        help='distributed launcher (default: pytorch under torchrun, else none)')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0, action=_LocalRankAction,
                        help='rank of this process on its machine (set by torch.distributed.launch; torchrun '
                             'sets LOCAL_RANK instead)')


def parse_device(text: str) -> str:
    """``argparse`` type of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked
    against the GPUs of this machine."""
    text = text.strip().lower()
    if not _DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f'unknown device {text!r}: expected cpu, cuda or cuda:N')
    if text.startswith('cuda'):
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(':')[1]) if ':' in text else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f'device {text}: this machine has no CUDA GPU (use --device cpu)')
        if index >= count:
            raise argparse.ArgumentTypeError(f'device {text}: this machine has {count} CUDA GPU(s), '
                                             f'cuda:0..cuda:{count - 1}')
    return text


def add_device(parser: argparse.ArgumentParser, default: str = 'auto') -> None:
    parser.add_argument('--device', type=parse_device, default=default,
                        help='cpu, cuda or cuda:N; auto: cuda when a GPU is there, else cpu')


def resolve_device(device: str):
    """The ``torch.device`` of a ``--device`` value (``auto``: CUDA when available)."""
    import torch
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(parse_device(device))


def use_runner_device(device: str, launcher: Optional[str] = None) -> None:
    """Make mmengine's Runner, which puts the model on CUDA whenever it can, use ``device``:
    ``cpu`` hides the GPUs from this process (call before anything touches CUDA), ``cuda:N``
    selects GPU N. Under a distributed launcher each process takes the GPU of its local rank,
    so ``cuda:N`` is refused there (choose GPUs with CUDA_VISIBLE_DEVICES)."""
    if device in ('auto', 'cuda'):
        return
    if device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
        return
    distributed = (launcher or 'none') != 'none' or int(os.environ.get('WORLD_SIZE', '1')) > 1
    if distributed:
        raise InputError(f'--device {device} under a distributed launcher', 'command line',
                         'cpu or cuda: every process uses the GPU of its local rank; choose GPUs with '
                         'CUDA_VISIBLE_DEVICES')
    import torch
    torch.cuda.set_device(torch.device(device))


def default_out_dir(tool: str, *parts: str) -> str:
    """``work_dirs/<tool>/<parts...>``: where a tool writes when ``--out-dir`` is not given
    (never beside an input, which may sit in a read-only cache)."""
    return os.path.join('work_dirs', tool, *[p for p in parts if p])


def add_amp(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: bfloat16 autocast where the device runs it (CPU, CUDA GPUs from '
                             'Ampere on), else float16 with loss scaling (backbones.amp)')


def error_message(err: BaseException) -> str:
    """One line for a user error: OS errors as ``<reason>: <path>``, line breaks folded."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f'{err.strerror}: {err.filename}'
    else:
        text = str(err) or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return '; '.join(lines) or type(err).__name__


def run_main(main: Callable[[Sequence[str]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main(argv)`` and return its exit status.

    A user error (``USER_ERRORS``: ``InputError``, any other ``ValueError``, a missing,
    unreadable or misplaced file) is printed as one line ``error: <message>`` on stderr and
    gives status 2; with ``--debug`` in ``argv`` the traceback comes first. Any other
    exception is a bug and propagates with its traceback. ``argparse`` errors and
    ``SystemExit`` pass through (status 2 for a bad flag, 0 for ``--help``). Without
    ``--verbose`` the Python warnings the pinned stack raises on import are ignored
    (``backbones.console.LIBRARY_WARNINGS``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    from .console import quiet_library_warnings
    if '--verbose' not in argv:  # (parsed inside main, too late for warnings raised by its imports)
        quiet_library_warnings()
    try:
        status = main(argv)
    except USER_ERRORS as err:
        if '--debug' in argv:
            traceback.print_exc()
        print(f'error: {error_message(err)}', file=sys.stderr, flush=True)
        return 2
    return 0 if status is None else int(status)


def is_rank0() -> bool:
    """Whether this process is the one that prints: rank 0 of an initialised process group,
    else of the launcher's environment (``RANK``), else the only process."""
    dist = sys.modules.get('torch.distributed')
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if os.environ.get(name, '').strip():
            return int(os.environ[name]) == 0
    return True


def rank0_print(*args, **kwargs) -> None:
    """``print`` on rank 0 only (a result line is printed once under torchrun)."""
    if is_rank0():
        kwargs.setdefault('flush', True)
        print(*args, **kwargs)


def _jsonable(value):
    if hasattr(value, 'tolist'):  # numpy and torch scalars and arrays
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def print_result(result: dict) -> None:
    """The tool's last stdout line: ``result`` as one JSON object, on rank 0 only; also
    written to the file ``$TOPONET_RESULT_FILE`` names, when set (how ``make demo`` collects
    each step's result for its summary, ``tools/demo_summary.py``)."""
    if not isinstance(result, dict):
        raise TypeError(f'print_result takes a dict, got {type(result).__name__}')
    text = json.dumps(result, default=_jsonable)
    rank0_print(text)
    path = os.environ.get(RESULT_FILE_ENV, '').strip()
    if path and is_rank0():
        from .io_utils import atomic_write_text
        atomic_write_text(path, text + '\n')
