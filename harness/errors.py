"""One error type for everything a user can get wrong.

The CLI prints ``str(err)`` as a single line and exits 2; the traceback only
appears with ``--debug``.  Naming the file (and line) is what makes the
message actionable, so both are first-class fields.
"""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class ArcbenchError(Exception):
    """A user-facing error: bad input, bad config, unknown name, missing file."""

    exit_code = 2

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None):
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


class UnknownNameError(ArcbenchError):
    """A device, backbone or head name that no plugin registered."""

    def __init__(self, kind: str, name: str, known):
        known = sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known) or '(none)'}")
        self.kind, self.name, self.known = kind, name, known
