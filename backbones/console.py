"""What a run shows on the console, and what only its log file gets.

mmengine logs everything a run does (environment, the whole config, hook tables, one
line per logging interval) to two handlers of its ``MMLogger``: a file in the run's work
dir and a console stream. The file keeps all of it. The console, by default, gets only

* warnings and errors, as ``warning: <message>`` (but for ``DROPPED_WARNINGS``: mmengine's
  notices about its own deprecations and the like, which nobody can act on);
* records marked for it, ``logger.info(msg, extra=CONSOLE)``: progress lines, validation
  results, where an export went (``backbones.mmengine_hooks.ProgressBarHook`` and the task
  hooks mark theirs);
* the mmengine line a user acts on (``KEPT_INFO``: where a resumed run continues).

``--verbose`` (every tool's flag, ``backbones.cli``) or ``TOPONET_VERBOSE=1`` (inherited by
subprocesses, e.g. ``make demo VERBOSE=1``) puts everything back on the console, in
mmengine's own layout.

The mechanism is a ``logging.Filter`` (``ConsoleFilter``) and a formatter on the console
handler of every ``MMLogger``: ``install()`` (called by
``backbones.mmengine_runner.build_runner_cfg``) attaches them to the loggers that exist and to
each one created afterwards (mmengine builds a Runner's logger, and logs the config through
it, inside ``Runner.__init__``, so no hook could attach them in time). Around it:

* ``logging_through_bars``: while progress bars are open, console logging goes through
  ``tqdm.write`` (``tqdm.contrib.logging.logging_redirect_tqdm``), so a bar and a log line
  never share a line;
* ``captured_prints``: what libraries ``print`` during a run (pycocotools) becomes INFO
  records, i.e. log-file lines;
* ``quiet_library_warnings``: Python warnings the pinned stack raises on import
  (``LIBRARY_WARNINGS``) are ignored; ``backbones.cli.run_main`` calls it for every tool.

Example:
    >>> import logging
    >>> record = logging.LogRecord('mmengine', logging.INFO, __file__, 1, 'Config:', None, None)
    >>> ConsoleFilter(verbose=False).filter(record), ConsoleFilter(verbose=True).filter(record)
    (False, True)
    >>> record.console = True
    >>> ConsoleFilter(verbose=False).filter(record)
    True
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from typing import Optional

__all__ = ['CONSOLE', 'KEPT_INFO', 'DROPPED_WARNINGS', 'LIBRARY_WARNINGS', 'VERBOSE_ENV', 'ConsoleFilter',
           'ConsoleFormatter', 'is_verbose', 'set_verbose', 'install', 'console_handlers', 'console_stream',
           'is_terminal', 'logging_through_bars', 'captured_prints', 'quiet_library_warnings']

VERBOSE_ENV = 'TOPONET_VERBOSE'
# ``extra`` of a log record meant for the console as well as the log file.
CONSOLE = {'console': True}
# mmengine INFO lines kept on the quiet console: where a resumed run continues.
KEPT_INFO = re.compile(r'^resumed epoch: \d+, iter: \d+')
# Warnings nobody can act on, left to the log file: mmengine's notices about its own internals,
# and its optimizer constructor's note on parameters frozen by design (the face head's last BN).
DROPPED_WARNINGS = re.compile(r'^("?\w+"? (will be deprecated in future|is the alias of )|'
                              r'\S+ is skipped since its requires_grad=False)')

_verbose: Optional[bool] = None  # None: from the environment


def is_verbose() -> bool:
    """Whether the console shows everything mmengine logs (``--verbose``, ``TOPONET_VERBOSE=1``)."""
    if _verbose is not None:
        return _verbose
    return os.environ.get(VERBOSE_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def set_verbose(verbose: bool, inherit: bool = True) -> None:
    """Choose the console mode of this process; ``inherit`` also sets ``TOPONET_VERBOSE`` so
    the tools this process starts follow it."""
    global _verbose
    _verbose = bool(verbose)
    if inherit:
        if verbose:
            os.environ[VERBOSE_ENV] = '1'
        else:
            os.environ.pop(VERBOSE_ENV, None)


class ConsoleFilter(logging.Filter):
    """Pass a record to the console if it is an error, a warning other than
    ``DROPPED_WARNINGS``, marked ``console`` (see ``CONSOLE``), one of ``KEPT_INFO``, or
    anything at all in verbose mode.

    Args:
        verbose (bool, optional): Fixed mode; ``None`` follows ``is_verbose()`` at each record.
    """

    def __init__(self, verbose: Optional[bool] = None):
        super().__init__('toponet-console')
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if (self.verbose if self.verbose is not None else is_verbose()):
            return True
        if getattr(record, 'console', False) or record.levelno >= logging.ERROR:
            return True
        if record.levelno >= logging.WARNING:
            return not DROPPED_WARNINGS.match(str(record.msg))
        return bool(KEPT_INFO.match(str(record.msg)))


class ConsoleFormatter(logging.Formatter):
    """The quiet console's layout: a console line as it is, a warning as ``warning:
    <message>`` (an error as ``error: <message>``); in verbose mode mmengine's own layout
    (``formatter``), timestamps and all."""

    def __init__(self, formatter: Optional[logging.Formatter] = None):
        super().__init__()
        self.formatter = formatter or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if is_verbose():
            return self.formatter.format(record)
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f'{record.levelname.lower()}: {message}'
        if record.exc_info:
            message += '\n' + self.formatException(record.exc_info)
        return message


def console_handlers(logger: logging.Logger):
    """The handlers of ``logger`` that write to a console stream, not to a file."""
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _attach(logger: logging.Logger) -> None:
    for handler in console_handlers(logger):
        if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())
        if not isinstance(handler.formatter, ConsoleFormatter):
            handler.setFormatter(ConsoleFormatter(handler.formatter))


def install() -> None:
    """Put ``ConsoleFilter`` on the console handler of every ``MMLogger``, those created so
    far and those created later (idempotent)."""
    from mmengine.logging import MMLogger
    if not getattr(MMLogger.__init__, '_toponet_console', False):
        original = MMLogger.__init__

        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            _attach(self)

        __init__._toponet_console = True
        __init__.__doc__ = original.__doc__
        MMLogger.__init__ = __init__
    for logger in list(MMLogger._instance_dict.values()):
        _attach(logger)


def console_stream(logger: logging.Logger):
    """The stream ``logger``'s console handler writes to (``sys.stdout`` without one): where
    progress bars are drawn, so that a log line and a bar share one stream and
    ``tqdm.write`` clears the bar before the line."""
    handlers = console_handlers(logger)
    return handlers[0].stream if handlers else sys.stdout


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default ``sys.stdout``) is a terminal: bars there, plain progress
    lines (no carriage returns) anywhere else."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def logging_through_bars(logger: logging.Logger):
    """While progress bars are open: ``logger``'s console logging goes through
    ``tqdm.write`` (``tqdm.contrib.logging.logging_redirect_tqdm``), which clears the bars,
    writes the line and redraws them, with the console handler's stream, level, filters and
    layout."""
    from tqdm.contrib.logging import logging_redirect_tqdm
    handlers = console_handlers(logger)
    if not handlers:
        yield
        return
    before = list(logger.handlers)
    redirect = logging_redirect_tqdm(loggers=[logger])
    # logging_redirect_tqdm finds the console handler by sys.stdout/sys.stderr, which
    # captured_prints may have replaced meanwhile
    saved, sys.stdout = sys.stdout, handlers[0].stream
    try:
        redirect.__enter__()
    finally:
        sys.stdout = saved
    try:
        for handler in logger.handlers:
            if handler not in before:
                handler.setLevel(handlers[0].level)
        yield
    finally:
        redirect.__exit__(None, None, None)


class _PrintsToLog(io.TextIOBase):
    """A text stream whose lines become INFO records of ``logger``."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger
        self._pending = ''

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split('\n')
        self._pending = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self.logger.info(self._pending.rstrip())
        self._pending = ''


@contextlib.contextmanager
def captured_prints(logger: logging.Logger):
    """Send what libraries ``print`` meanwhile (pycocotools' index and evaluation
    chatter, mmengine's checkpoint-loading notes) to ``logger`` as INFO lines: into the log
    file, and onto the console in verbose mode."""
    stream = _PrintsToLog(logger)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        stream.flush()


# Python warnings raised by the pinned stack's own imports, which no user can act on.
LIBRARY_WARNINGS = (r'pkg_resources is deprecated as an API',)


def quiet_library_warnings() -> None:
    """Ignore ``LIBRARY_WARNINGS`` in this process (not in verbose mode)."""
    import warnings
    if is_verbose():
        return
    for message in LIBRARY_WARNINGS:
        warnings.filterwarnings('ignore', message=message)
