"""Shared helpers for the reliability tests: tiny data, a tiny backbone, CLI runners.

Every training here uses the ``reltiny`` backbone from ``pluginpath/arcbench_reltest.py``,
copied into a temporary folder that is put on PYTHONPATH (so spawned DDP workers import
it too) and loaded with ``--plugin arcbench_reltest``: the tests exercise the harness,
not MobileFaceNet, and a step costs milliseconds.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest
from click.testing import CliRunner

HERE = Path(__file__).resolve().parent
PLUGIN = "arcbench_reltest"
REFERENCE = Path(os.environ.get("ARCBENCH_REFERENCE", HERE.parents[2] / "shared" / "reference"))


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pluginpath")
    shutil.copy(HERE / "pluginpath" / f"{PLUGIN}.py", d / f"{PLUGIN}.py")
    return d


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory, plugin_dir):
    """Cache in a temp dir, the test plugin importable here and in children, no debug."""
    monkeypatch.setenv("ARCBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(plugin_dir) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # ARCBENCH_PLUGIN_MODULES: --plugin records itself there for worker processes; undone after the test
    for var in ("ARCBENCH_DEBUG", "ARCBENCH_PLUGIN_MODULES", "RELTEST_SLEEP", "RELTEST_DIE_RANK",
                "RELTEST_DIE_AFTER", "RELTEST_DIE_HOW"):
        monkeypatch.setenv(var, "")  # records the original, so teardown restores it even if code set it
        monkeypatch.delenv(var)
    yield
    from arcbench import plugin_manager

    plugin_manager.unregister_plugin(PLUGIN)  # leave the plugin manager as other tests expect it


@pytest.fixture(scope="session")
def faces(tmp_path_factory) -> Path:
    """A tiny LFW-like set: train/ (6 ids x 4), cls_train.txt, verify/ (20 ids x 3), pairs.txt."""
    from arcbench.data.synth import generate

    root = tmp_path_factory.mktemp("faces")
    generate(root, identities=6, images_per_identity=4, verify_identities=20, verify_images=3, pairs=3,
             workers=0)
    return root


@pytest.fixture
def faces_copy(faces, tmp_path) -> Path:
    """A private copy of :func:`faces` a test may damage."""
    dst = tmp_path / "faces"
    shutil.copytree(faces, dst)
    return dst


@pytest.fixture(scope="session")
def weights(tmp_path_factory, plugin_dir) -> Path:
    """Random-init ``reltiny`` weights (a valid checkpoint for the tiny backbone)."""
    import torch

    sys.path.insert(0, str(plugin_dir))
    try:
        from arcbench_reltest import RelTiny
    finally:
        sys.path.remove(str(plugin_dir))
    path = tmp_path_factory.mktemp("weights") / "reltiny.pth"
    torch.save(RelTiny().state_dict(), path)
    return path


# ---------------------------------------------------------------- running the CLI
def arcbench_exe() -> List[str]:
    """The installed console script (as users run it), else ``python -m arcbench``."""
    script = Path(sys.executable).with_name("arcbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "arcbench"]


def cli(args, timeout: float = 120, cwd=None, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ``arcbench ARGS`` in a real subprocess."""
    return subprocess.run(arcbench_exe() + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def invoke(args):
    """Run ``arcbench ARGS`` in-process, with the CLI's real error handling (standalone mode)."""
    from arcbench.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def train_args(out, *extra) -> list:
    return ["--plugin", PLUGIN, "run", "--device", "cpu", "--backbone", "reltiny", "--epochs", "1",
            "--batch-size", "4", "--workers", "0", "--eval-batch-size", "16", "--quiet", "--out", str(out),
            *extra]


def assert_one_line_error(rc: int, stderr: str, *names: str, code: int = 2) -> str:
    """Exit ``code``, exactly one non-empty stderr line, an ``arcbench: error:`` naming ``names``."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("arcbench: warning")]
    assert rc == code, f"exit {rc}, stderr: {stderr}"
    assert len(lines) == 1, f"expected one line, got: {stderr}"
    assert "Traceback" not in stderr, stderr
    line = lines[0]
    assert line.startswith("arcbench: error: "), line
    for n in names:
        assert str(n) in line, f"{n!r} not in {line!r}"
    return line


def assert_result_error(result, *names: str, code: int = 2) -> str:
    """:func:`assert_one_line_error` for a CliRunner result."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return assert_one_line_error(result.exit_code, result.stderr, *names, code=code)


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in Path(out).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def all_json_parses(run_dir: Path) -> List[Path]:
    """Every ``*.json`` under the run dir parses; returns them."""
    found = sorted(Path(run_dir).rglob("*.json"))
    for p in found:
        json.loads(p.read_text())
    return found


def metrics_records(run_dir: Path) -> List[dict]:
    """The parseable ``DLLL`` lines of metrics.jsonl (a torn line is skipped, as readers do)."""
    out = []
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.startswith("DLLL "):
            try:
                out.append(json.loads(line[5:]))
            except ValueError:
                pass
    return out


def wait_for(predicate, timeout: float, proc: Optional[subprocess.Popen] = None, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited ({proc.returncode}) before {what}: {out}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    """Make sure a child started by a test is gone (its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait(timeout=30)
