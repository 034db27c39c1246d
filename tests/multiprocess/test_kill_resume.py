"""A run killed with kill -9 stays in the record: the report calls it stale with the resume command,
and the resume records the killed segment (last known step, wall time up to its last record,
ended: killed) without counting the redone steps twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]  # tests/
sys.path.insert(0, str(HERE))
from report_fixtures import make_run  # noqa: E402
from testutil import IMPORT_PATH


def env(**extra):
    e = dict(os.environ)
    e["PYTHONPATH"] = IMPORT_PATH + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("ARCBENCH_DEBUG", None)
    e["OMP_NUM_THREADS"] = "1"
    e["COLUMNS"] = "120"
    e.update(extra)
    return e


def arcbench(*args, cwd, **extra):
    return subprocess.run([sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", *map(str, args)],
                          env=env(**extra), cwd=cwd, capture_output=True, text=True, timeout=300)


def _step_records(path: Path) -> list:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("DLLL {"):
            try:
                rec = json.loads(line[5:])
            except ValueError:
                continue
            if rec.get("type") == "LOG" and len(rec.get("step") or []) == 2:
                out.append(rec)
    return out


@pytest.mark.slow
def test_kill_9_then_resume_keeps_the_killed_segment(tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "victim"
    cmd = [sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", "run", "--device", "cpu", "--backbone",
           "tiny", "--train-data", "synthetic", "--synthetic-classes", "10", "--synthetic-steps", "12",
           "--epochs", "1", "--batch-size", "4", "--checkpoint-steps", "4", "--log-interval", "1", "--quiet",
           "--out", str(runs), "--run-id", "victim"]
    started = time.time()
    victim = subprocess.Popen(cmd, env=env(TINY_SLEEP_FROM="8"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(_step_records(run_dir / "metrics.jsonl")) < 7:
            assert victim.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        assert len(_step_records(run_dir / "metrics.jsonl")) == 7  # step 8 hangs: 1-7 are on record
        time.sleep(0.5)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    killed_after = time.time() - started
    assert victim.returncode == -signal.SIGKILL
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"

    # the report tells a dead run from a running one, and how to continue it
    rep = arcbench("report", runs, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "stale (process gone)" in rep.stdout
    assert f"arcbench run --resume {run_dir}" in rep.stdout

    # resume from another folder: the closing hint names the run's folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = arcbench("run", "--resume", run_dir, cwd=elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "arcbench report ../runs" in res.stdout

    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 12
    killed, resumed = s["segments"]
    assert killed["ended"] == "killed" and killed["start_step"] == 0 and killed["end_step"] == 7
    assert killed["kept_step"] == 4 and killed["steps_redone"] == 3
    assert 0 < killed["wall_time"] < killed_after
    assert resumed["ended"] == "completed" and resumed["start_step"] == 4 and resumed["end_step"] == 12
    assert s["wall_time"] == pytest.approx(killed["wall_time"] + resumed["wall_time"], abs=1e-3)

    # metrics.jsonl keeps every line; readers skip the three records the resume redid
    from arcbench.reports import curves
    from arcbench.reports.dllog import parse_file

    parsed = parse_file(run_dir / "metrics.jsonl")
    assert len(_step_records(run_dir / "metrics.jsonl")) == 7 + 8
    assert parsed.superseded == 3
    loss = curves.loss_curve(parsed)
    assert len(loss) == 12 and loss["iteration"].tolist() == list(range(1, 13))
    assert len(curves.throughput_series(parsed)) == 12
    rep = arcbench("report", runs, cwd=tmp_path)
    assert "stale" not in rep.stdout and "completed" in rep.stdout


def test_a_running_run_is_stale_only_when_no_process_holds_its_lock(tmp_path):
    from arcbench.reports import load_runs
    from arcbench.run.rundir import RunLock, lock_held

    d = make_run(tmp_path / "runs", "r1", status="running")
    assert lock_held(d) is None  # no lock file: cannot tell, the run stays "running"
    assert load_runs(tmp_path / "runs")["status"].tolist() == ["running"]
    lock = RunLock(d).acquire()
    try:
        assert lock_held(d) is True
        assert load_runs(tmp_path / "runs")["status"].tolist() == ["running"]
    finally:
        lock.release()
    assert lock_held(d) is False  # the lock file stays, nobody holds it
    df = load_runs(tmp_path / "runs")
    assert df["status"].tolist() == ["stale (process gone)"]
    assert f"arcbench run --resume {d}" in df["reason"].iloc[0]
    assert df["reference_check"].iloc[0] == "n/a (stale)"


def test_readers_skip_the_records_a_resume_redid():
    from arcbench.reports.dllog import parse_lines

    def rec(e, it, loss):
        return "DLLL " + json.dumps({"type": "LOG", "step": [e, it], "data": {"train.loss": loss}})

    meta = "DLLL " + json.dumps({"type": "METADATA", "metric": "train.loss", "metadata": {}})
    first = [meta] + [rec(1, i, 1.0) for i in range(1, 6)] + \
        ["DLLL " + json.dumps({"type": "LOG", "step": [1], "data": {"val.lfw.accuracy": 0.5}})] + \
        [rec(2, i, 1.0) for i in range(1, 3)]
    resumed = [meta] + [rec(1, i, 2.0) for i in range(4, 6)] + [rec(2, i, 2.0) for i in range(1, 4)]
    parsed = parse_lines(first + resumed)
    assert parsed.superseded == 5  # (1,4) (1,5) the epoch-1 record (2,1) (2,2)
    steps = [(r.step, r.data.get("train.loss")) for r in parsed.logs]
    assert steps == [((1, i), 1.0) for i in range(1, 4)] + [((1, 4), 2.0), ((1, 5), 2.0)] + \
        [((2, i), 2.0) for i in range(1, 4)]


def test_an_elastic_restart_is_not_recorded_as_killed(tmp_path, monkeypatch):
    """torchrun restarting its workers re-prepares the run while its summary says running: that
    attempt is recorded 'restarted' by segments.closed(), not 'killed' here as well."""
    from types import SimpleNamespace

    from arcbench.run import runner

    run = SimpleNamespace(run_dir=str(tmp_path), cfg=SimpleNamespace(mode="train"))
    previous = {"status": "running", "segment_started": 1.0}
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert [s["ended"] for s in runner._killed(run, previous)] == ["killed"]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert runner._killed(run, previous) == []
