"""Plain helpers the tests share (fixtures live in ``conftest.py``)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

#: the tests folder, its stand-ins (torch_sdaa, fakecards, tinyplugin ...), the repository
TESTS = Path(__file__).resolve().parent
STANDINS = TESTS / "standins"
#: the stand-in SDKs (torch_sdaa): on the path only where a test asks for them, so that elsewhere
#: ``--device auto`` sees the host as it is
SDK = STANDINS / "sdk"
REPO = TESTS.parent
#: what a launched worker needs on PYTHONPATH to import the stand-in plugins and these helpers
IMPORT_PATH = os.pathsep.join([str(STANDINS), str(TESTS)])


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


def cli_run(*args):
    """``arcbench ARGS`` in-process (click's runner); arguments may be paths."""
    from click.testing import CliRunner

    from arcbench.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def cli_ok(result):
    assert result.exit_code == 0, result.output
    return result


def cli_one_line_error(result, *needles) -> str:
    """Exit 2 and one ``arcbench: error:`` line on stderr that contains every needle; no traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("arcbench: error: "), result.stderr
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    assert "Traceback" not in result.output
    return lines[0]
