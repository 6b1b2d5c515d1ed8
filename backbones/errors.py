"""The project's one user-error type.

A user error is bad input the user can fix: a missing or malformed file, a bad value, an
unknown config key, a checkpoint of the wrong kind. Every command line prints it as one line

    error: <what> (<file/record/key>): <what was expected>

on stderr and exits with status 2 (``backbones.cli``); anything else is a bug and keeps its
traceback. ``InputError`` subclasses ``ValueError`` so library callers that already catch
``ValueError`` keep working.
"""
from __future__ import annotations

from typing import Optional

__all__ = ['InputError']


class InputError(ValueError):
    """Bad input, with what was wrong, where, and what was expected.

    Args:
        what (str): What is wrong (``'label out of range'``).
        where (str, optional): The file, record, field or key (``'train.rec record 17'``).
        expected (str, optional): What would have been accepted (``'0..9'``).

    Example:
        >>> str(InputError('label out of range', 'train.rec record 17', 'labels in 0..9'))
        'label out of range (train.rec record 17): labels in 0..9'
    """

    def __init__(self, what: str, where: Optional[str] = None, expected: Optional[str] = None):
        self.what, self.where, self.expected = what, where, expected
        text = what
        if where:
            text += f' ({where})'
        if expected:
            text += f': {expected}'
        super().__init__(text)

    def __reduce__(self):  # keeps the three fields through pickling (DataLoader workers, subprocesses)
        return (type(self), (self.what, self.where, self.expected))
