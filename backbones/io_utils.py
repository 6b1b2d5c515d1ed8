"""Atomic file writes: a crash mid-write never leaves a truncated file behind."""
from __future__ import annotations

import os
import tempfile
from typing import Callable

__all__ = ['atomic_write', 'atomic_write_text', 'atomic_write_bytes']


def atomic_write(path: str, write: Callable[[str], None], fsync: bool = True) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over
    ``path`` (``os.replace`` is atomic on POSIX and Windows). ``fsync=False`` skips flushing
    the file to disk first: a killed process still leaves no partial file, a power cut may
    (for caches of many small files that can be recomputed)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str, data: bytes, fsync: bool = True) -> None:
    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(data)
    atomic_write(path, write, fsync=fsync)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))
