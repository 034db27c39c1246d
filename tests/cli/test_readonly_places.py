"""A place a user cannot write (read-only mount, no permission, full disk) is one line naming the
path, exit 2 -- never "internal error": the run lock, the report's output, exports, data sets."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import uuid

import pytest
from click.testing import CliRunner

from arcbench.cli import main
from arcbench.config import RunConfig


def _run_dir(parent) -> str:
    """A run dir as an interrupted run leaves it (what --resume reopens)."""
    d = os.path.join(os.fspath(parent), "20261205-221000-train-mobilefacenet-cpu-ab12")
    os.makedirs(d)
    cfg = RunConfig(device="cpu", max_steps=4, out=os.fspath(parent)).to_dict()
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    with open(os.path.join(d, "summary.json"), "w") as fh:
        json.dump({"run_id": os.path.basename(d), "status": "interrupted", "mode": "train", "steps": 2,
                   "date": "2026-12-05T22:10:00", "device": "cpu", "backbone": "mobilefacenet"}, fh)
    return d


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_naming(res, path: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert "\n" not in err and "internal error" not in err, err
    assert err.startswith("arcbench: error: ") and path in err, err


@pytest.fixture
def read_only(tmp_path):
    """A tmpfs filled by the test, then remounted read-only; skipped where mounting is not allowed."""
    where = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")

    def seal():
        out = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot remount read-only: {out.stderr.strip()}")
        probe = where / ".probe"
        try:
            probe.write_text("x")
        except OSError:
            return
        pytest.skip("the read-only mount still takes writes")

    try:
        yield where, seal
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_resume_on_a_read_only_mount(read_only):
    where, seal = read_only
    run_dir = _run_dir(where)
    seal()
    res = invoke("run", "--resume", run_dir, "--max-steps", "6")
    _one_line_naming(res, os.path.join(run_dir, ".lock"))
    assert "Read-only file system" in res.stderr


def test_report_outputs_on_a_read_only_mount(read_only):
    where, seal = read_only
    run_dir = _run_dir(where)
    seal()
    res = invoke("report", where, "--format", "html")  # default output: into the runs dir
    _one_line_naming(res, os.path.join(os.fspath(where), "arcbench-report.html"))
    res = invoke("report", run_dir, "--format", "md", "--out", where / "report.md")
    _one_line_naming(res, os.fspath(where / "report.md"))


def test_data_outputs_on_a_read_only_mount(read_only):
    where, seal = read_only
    seal()
    res = invoke("data", "synth", "--out", where / "set", "--identities", "2", "--images-per-identity", "2",
                 "--verify-identities", "0")
    _one_line_naming(res, os.fspath(where / "set"))
    res = invoke("run", "--out", where / "runs", "--max-steps", "1", "--quiet")
    _one_line_naming(res, os.fspath(where / "runs"))


def _refuse(real, match, code=errno.EROFS):
    def fake(path, *args, **kwargs):
        if match(os.fspath(path)):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path, *args, **kwargs)
    return fake


def test_lock_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    """The same contract where no mount is allowed: the lock's open fails as on a read-only disk."""
    from arcbench.run import rundir

    run_dir = _run_dir(tmp_path)
    monkeypatch.setattr(rundir.os, "open", _refuse(os.open, lambda p: p.endswith(".lock")))
    res = invoke("run", "--resume", run_dir, "--max-steps", "6")
    _one_line_naming(res, os.path.join(run_dir, ".lock"))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_report_output_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, code):
    from arcbench.record import atomic

    run_dir = _run_dir(tmp_path / "runs")
    real = atomic.tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        raise OSError(code, os.strerror(code), os.path.join(kwargs.get("dir", "."), ".tmpfile"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    res = invoke("report", tmp_path / "runs", "--format", "html")
    _one_line_naming(res, os.path.join(os.fspath(tmp_path / "runs"), "arcbench-report.html"))
    assert os.strerror(code) in res.stderr
    monkeypatch.setattr(atomic.tempfile, "mkstemp", real)
    assert os.path.isdir(run_dir)


def test_export_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """An export (here data index's annotation file) names its own path, not the temporary file's."""
    from arcbench.record import atomic

    faces = tmp_path / "faces"
    for ident in ("anna", "ben"):
        (faces / ident).mkdir(parents=True)
        (faces / ident / "0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not decoded by data index")
    target = tmp_path / "cls_train.txt"

    def mkstemp(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(kwargs.get("dir", "."), ".tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    res = invoke("data", "index", faces, "--out", target)
    _one_line_naming(res, os.fspath(target))


def test_any_unwritable_file_reaching_the_command_line_is_one_line(tmp_path, monkeypatch):
    """A file opened with a plain open() (e.g. metrics.jsonl) that the disk refuses: the OS's file
    name, one line, exit 2 (not "internal error", exit 1)."""
    from arcbench.reports import modes

    _run_dir(tmp_path / "runs")
    where = os.fspath(tmp_path / "runs" / "metrics.jsonl")

    def refuse(*args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), where)

    monkeypatch.setattr(modes, "runs_text", refuse)
    _one_line_naming(invoke("report", tmp_path / "runs"), where)
    monkeypatch.setattr(modes, "runs_text", lambda *a, **k: 1 / 0)  # a bug stays an internal error
    res = invoke("report", tmp_path / "runs")
    assert res.exit_code == 1 and "internal error" in res.stderr
