"""Plain helpers the tests share (fixtures live in ``conftest.py``)."""
from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a test's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_args(faces) -> list:
    """``arcbench run`` flags for the ``faces`` set: training folder + annotation, verification pairs."""
    return ["--train-data", str(faces / "train"), "--annotation", str(faces / "cls_train.txt"),
            "--val-data", str(faces / "verify"), "--val-pairs", str(faces / "pairs.txt")]


def only_run_dir(out: Path) -> Path:
    """The one run directory a command wrote under ``out``."""
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]
