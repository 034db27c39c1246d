"""One error type for everything a user can get wrong.

The CLI prints ``str(err)`` as a single line and exits 2; the traceback only
appears with ``--debug``.  Naming the file (and line) is what makes the
message actionable, so both are first-class fields.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class ArcbenchError(Exception):
    """A user-facing error: bad input, bad config, unknown name, missing file."""

    exit_code = 2

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None):
        if path is None and isinstance(message, str):
            message = _unwrap_worker_message(message)
        super().__init__(message)
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        # Keep it to one line whatever the message contains.
        return (where + self.message).replace("\n", " ")


_WORKER_WRAP = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal Traceback")
_EXC_PREFIX = re.compile(r"^[\w.]*\w+: ")


def _unwrap_worker_message(message: str) -> str:
    """A DataLoader worker re-raises our error as ``ArcbenchError("Caught ... Original Traceback ...")``;
    keep only the original one-line message, not the worker's traceback."""
    if not _WORKER_WRAP.match(message):
        return message
    lines = [ln for ln in message.splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else message
    return _EXC_PREFIX.sub("", last, count=1)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` for the command line: one line, no source excerpt."""
    text = str(message).replace("\n", " ").strip()
    kind = "" if category is UserWarning else f" ({category.__name__})"
    return f"arcbench: warning{kind}: {text}\n"


class UnknownNameError(ArcbenchError):
    """A device, backbone or head name that no plugin registered."""

    def __init__(self, kind: str, name: str, known):
        known = sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known) or '(none)'}")
        self.kind, self.name, self.known = kind, name, known


#: errno values a user's file system causes (not a bug in arcbench): read-only, no permission, full
USER_FS_ERRNOS = frozenset(getattr(__import__("errno"), n) for n in ("EROFS", "EACCES", "EPERM", "ENOSPC", "EDQUOT")
                           if hasattr(__import__("errno"), n))


class FileSystemError(ArcbenchError, OSError):
    """A file or folder arcbench cannot write (or read): read-only, no permission, disk full.

    Still an ``OSError`` (with its ``errno``), so code that handles file errors keeps doing so."""

    def __init__(self, exc: OSError, path: PathLike, doing: str = "write"):
        super().__init__(f"cannot {doing}: {exc.strerror or exc}", path)
        self.errno = exc.errno
        self.strerror = exc.strerror


def file_system_error(exc: BaseException, path: Optional[PathLike] = None,
                      doing: str = "write") -> Optional[FileSystemError]:
    """``exc`` as a one-line :class:`FileSystemError` naming ``path`` (else the file the OS named),
    when it is a file-system error a user can cause; None otherwise."""
    if isinstance(exc, FileSystemError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in USER_FS_ERRNOS:
        return None
    where = path if path is not None else (exc.filename if exc.filename is not None else None)
    if where is None:
        return None
    return FileSystemError(exc, where, doing)
