"""Atomic file writes: write a temporary file beside the target, fsync, rename.

A reader (or a crash, or kill -9) therefore sees either the old file or the
new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

from ..errors import file_system_error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic(path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` atomically; a read-only place, a missing permission or a full disk is a
    one-line :class:`~arcbench.errors.FileSystemError` naming ``path``."""
    path = os.fspath(path)
    try:
        _write_replace(path, write, mode)
    except OSError as exc:
        err = file_system_error(exc, path)
        if err is None:
            raise
        raise err from None


def _write_replace(path: str, write: Callable[[Any], None], mode: str) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give files the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_bytes(path, data: bytes) -> None:
    _atomic(path, lambda fh: fh.write(data))


def write_text(path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json(path, obj, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_default) + "\n")


def torch_save(obj, path) -> None:
    import torch

    _atomic(path, lambda fh: torch.save(obj, fh))


def _default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)
