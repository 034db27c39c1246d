"""Faults: kill -9 and resume, Ctrl-C, unwritable or full output, a dead DDP worker, concurrent runs.

Each test starts real ``arcbench`` processes (in their own process group, so a
test can signal them like a terminal or the OOM killer would) and trains the
tiny ``reltiny`` backbone; ``RELTEST_SLEEP`` slows its steps so a signal lands
mid-epoch.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from .conftest import (PLUGIN, all_json_parses, arcbench_exe, assert_one_line_error, assert_result_error, cli,
                       invoke, metrics_records, only_run_dir, stop, summary, train_args, wait_for)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

STEPS_PER_EPOCH = 6  # 24 training images / batch 4


def start(args, env_extra=None) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen(arcbench_exe() + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def train_steps(run_dir: Path) -> list:
    """Global step numbers (1-based) of the per-step training records in metrics.jsonl."""
    out = []
    for rec in metrics_records(run_dir):
        step = rec.get("step") or []
        if rec.get("type") == "LOG" and len(step) == 2 and "train.loss" in rec.get("data", {}):
            out.append((step[0] - 1) * STEPS_PER_EPOCH + step[1])
    return out


def checkpoint_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["global_step"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ kill -9, then --resume
@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_continues_from_the_last_checkpoint(faces, tmp_path):
    out = tmp_path / "runs"
    run_dir = out / "k9"
    p = start(train_args(out, "--train-data", faces / "train", "--epochs", "2", "--checkpoint-steps", "2",
                         "--log-interval", "1", "--run-id", "k9"), {"RELTEST_SLEEP": "0.25"})
    try:
        # a checkpoint exists and training went on past it: we are mid-epoch, between checkpoints
        wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists()
                 and len(train_steps(run_dir)) >= checkpoint_step(run_dir) + 1
                 and len(train_steps(run_dir)) % STEPS_PER_EPOCH not in (0,), 90, p, "a checkpoint and more steps")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        stop(p)
    assert p.returncode == -signal.SIGKILL
    ckpt = checkpoint_step(run_dir)
    logged = train_steps(run_dir)
    assert 0 < ckpt < len(logged) < 2 * STEPS_PER_EPOCH

    # what a crash leaves: every JSON file intact; the summary still says "running"
    all_json_parses(run_dir)
    assert summary(run_dir)["status"] == "running"
    # a kill can tear the line being written: readers skip it
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('DLLL {"timestamp": "17000')
    from arcbench.reports.runs import load_runs

    problems: list = []
    df = load_runs(out, problems=problems)
    # its lock died with it: the report tells it from a live run
    assert list(df["run_id"]) == ["k9"] and df["status"][0] == "stale (process gone)"
    r = cli(["report", out, "--format", "csv"])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr

    r = cli(["--plugin", PLUGIN, "run", "--resume", run_dir, "--log-interval", "1"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed from {run_dir / 'checkpoints' / 'last.pt'}" in r.stdout
    assert f"step {ckpt}" in r.stdout
    s = summary(run_dir)
    assert s["status"] == "completed" and s["steps"] == 2 * STEPS_PER_EPOCH and s["resumed"] == 1
    killed = s["segments"][0]
    assert killed["ended"] == "killed" and killed["end_step"] == len(logged) and killed["kept_step"] == ckpt
    # the resumed process logged from the step after the checkpoint to the end, nothing before it
    text = (run_dir / "metrics.jsonl").read_text()
    assert 'DLLL {"timestamp": "17000\n' in text  # the torn line was ended, not glued to the next record
    resumed = train_steps(run_dir)[len(logged):]
    assert resumed == list(range(ckpt + 1, 2 * STEPS_PER_EPOCH + 1))
    all_json_parses(run_dir)
    assert not [p for p in run_dir.rglob("*.tmp")], "stale temporary files left behind"
    df = load_runs(out, problems=[])
    assert df["status"][0] == "completed"


# ------------------------------------------------------------------ Ctrl-C
@pytest.mark.slow
@pytest.mark.parametrize("to_group", [False, True], ids=["process", "process-group"])
def test_sigint_checkpoints_and_records_interrupted(faces, tmp_path, to_group):
    out = tmp_path / "runs"
    run_dir = out / "int"
    args = train_args(out, "--train-data", faces / "train", "--epochs", "3", "--log-interval", "1",
                      "--run-id", "int")
    if to_group:  # a terminal's Ctrl-C reaches the DataLoader workers too
        args[args.index("--workers") + 1] = "1"
    p = start(args, {"RELTEST_SLEEP": "0.3"})
    try:
        wait_for(lambda: len(train_steps(run_dir)) >= 3, 90, p, "three training steps")
        t0 = time.time()
        if to_group:
            os.killpg(p.pid, signal.SIGINT)
        else:
            p.send_signal(signal.SIGINT)
        output, _ = p.communicate(timeout=60)
        took = time.time() - t0
    finally:
        stop(p)
    assert p.returncode == 130, output
    assert took < 20, f"took {took:.1f}s to stop"
    assert "Traceback" not in output and "interrupted" in output
    assert f"arcbench run --resume {run_dir}" in output  # the exact command that continues it
    s = summary(run_dir)
    assert s["status"] == "interrupted" and "resume" in s["reason"]
    # the checkpoint holds every step that finished: none is lost
    assert checkpoint_step(run_dir) == len(train_steps(run_dir)) == s["steps"]
    all_json_parses(run_dir)

    r = cli(["--plugin", PLUGIN, "run", "--resume", run_dir, "--quiet"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["steps"] == 3 * STEPS_PER_EPOCH


# ------------------------------------------------------------------ output that cannot be written
def test_output_inside_a_file_fails_before_training(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("I am a file")
    r = cli(train_args(blocker / "runs", "--train-data", "synthetic"))
    assert_one_line_error(r.returncode, r.stderr, str(blocker / "runs"), "output directory")
    r = invoke(train_args(blocker, "--train-data", "synthetic"))
    assert_result_error(r, str(blocker), "not a directory")
    assert blocker.read_text() == "I am a file"


def test_full_disk_fails_before_training_and_leaves_no_run_dir(tmp_path, monkeypatch):
    real = os.statvfs

    def full(path):
        st = real(path)
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, st.f_files, st.f_ffree,
                                  st.f_favail, st.f_flag, st.f_namemax))

    monkeypatch.setattr(os, "statvfs", full)
    out = tmp_path / "runs"
    r = invoke(train_args(out, "--train-data", "synthetic"))
    assert_result_error(r, str(out), "disk is full")
    assert list(out.iterdir()) == [], "no half-made run dir"


def test_unwritable_run_dir_on_resume_keeps_what_was_recorded(faces, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    r = invoke(train_args(out, "--train-data", "synthetic", "--synthetic-steps", "2", "--synthetic-classes", "4",
                          "--run-id", "r"))
    assert r.exit_code == 0, r.output
    before = {p.name: p.read_bytes() for p in (out / "r").glob("*.json")}
    import builtins

    real_open = builtins.open

    def no_write(path, mode="r", *a, **kw):
        if ".write-probe" in str(path):
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", no_write)
    r = invoke(train_args(out, "--resume", out / "r", "--epochs", "2"))
    assert_result_error(r, str(out / "r"), "not writable")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (out / "r").glob("*.json")} == before


@pytest.mark.slow
def test_ctrl_c_at_two_processes_records_interrupted_and_resumes(tmp_path):
    """A terminal's Ctrl-C reaches the launcher and both workers (and the launcher forwards it
    again): the run stops, is recorded 'interrupted' with the step it saved, says how to resume,
    and the resume completes it."""
    out = tmp_path / "runs"
    run_dir = out / "mp"
    args = train_args(out, "--train-data", "synthetic", "--synthetic-classes", "10", "--synthetic-steps", "40",
                      "--nproc", "2", "--master-port", free_port(), "--log-interval", "1", "--checkpoint-steps",
                      "2", "--run-id", "mp")
    p = start(args, {"RELTEST_SLEEP": "0.2"})
    try:
        wait_for(lambda: len(train_steps(run_dir)) >= 4, 120, p, "four training steps")
        os.killpg(p.pid, signal.SIGINT)
        output, _ = p.communicate(timeout=90)
    finally:
        stop(p)
    assert p.returncode == 130, output
    assert "Traceback" not in output, output
    assert f"arcbench run --resume {run_dir}" in output
    s = summary(run_dir)
    assert s["status"] == "interrupted" and "resume" in s["reason"], s
    assert 4 <= s["steps"] == checkpoint_step(run_dir) < 40  # what was saved: a resume starts there
    assert [g["ended"] for g in s["segments"]] == ["interrupted"] and s["segments"][0]["end_step"] == s["steps"]
    done = cli(["--plugin", PLUGIN, "run", "--resume", run_dir], timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    s = summary(run_dir)
    assert s["status"] == "completed" and s["steps"] == 40 and s["resumed"] == 1
    assert [g["ended"] for g in s["segments"]] == ["interrupted", "completed"]


# ------------------------------------------------------------------ a DDP worker dies
@pytest.mark.slow
@pytest.mark.parametrize("how,expect", [("exit", "exit code 3"), ("kill", "killed by SIGKILL")])
def test_ddp_worker_crash_fails_the_run_with_the_reason(tmp_path, how, expect):
    out = tmp_path / "runs"
    args = train_args(out, "--train-data", "synthetic", "--synthetic-classes", "10", "--synthetic-steps", "50",
                      "--nproc", "2", "--master-port", free_port())
    t0 = time.time()
    p = start(args, {"RELTEST_DIE_RANK": "1", "RELTEST_DIE_AFTER": "2", "RELTEST_DIE_HOW": how})
    try:
        output, _ = p.communicate(timeout=150)
    finally:
        stop(p)
    took = time.time() - t0
    assert took < 120, f"a dead worker took {took:.0f}s to fail the run"
    assert p.returncode == 1, output
    s = summary(only_run_dir(out))
    assert s["status"] == "failed"
    assert s["reason"].startswith(f"worker rank 1 {expect}"), s["reason"]
    lines = [ln for ln in output.splitlines() if ln.startswith("arcbench:") and "warning" not in ln]
    assert lines[-1].startswith("arcbench: run failed: worker rank 1"), output
    assert "Traceback" not in output, output
    all_json_parses(only_run_dir(out))


# ------------------------------------------------------------------ two runs, one runs directory
@pytest.mark.slow
def test_concurrent_runs_into_one_directory_are_both_recorded(tmp_path):
    out = tmp_path / "runs"
    procs = [start(train_args(out, "--train-data", "synthetic", "--synthetic-classes", "4", "--synthetic-steps",
                              "4", "--seed", str(seed)), {"RELTEST_SLEEP": "0.05"}) for seed in (11, 22)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            stop(p)
    assert [p.returncode for p in procs] == [0, 0], outputs
    dirs = sorted(d for d in out.iterdir() if d.is_dir())
    assert len(dirs) == 2
    seeds = set()
    for d in dirs:
        all_json_parses(d)
        s = summary(d)
        assert s["status"] == "completed" and s["run_id"] == d.name and s["steps"] == 4
        seeds.add(json.loads((d / "config.json").read_text())["seed"])
        assert len(train_steps(d)) == 4  # each metrics.jsonl holds one run's steps, not both
    assert seeds == {11, 22}


def test_the_same_run_id_twice_never_overwrites(tmp_path):
    out = tmp_path / "runs"
    args = train_args(out, "--train-data", "synthetic", "--synthetic-classes", "4", "--synthetic-steps", "2",
                      "--run-id", "same")
    assert invoke(args).exit_code == 0
    before = (out / "same" / "summary.json").read_bytes()
    assert_result_error(invoke(args), str(out / "same"), "already exists")
    assert (out / "same" / "summary.json").read_bytes() == before


@pytest.mark.slow
def test_resuming_a_run_that_is_still_going_is_refused(faces, tmp_path):
    out = tmp_path / "runs"
    run_dir = out / "live"
    p = start(train_args(out, "--train-data", faces / "train", "--epochs", "3", "--log-interval", "1",
                         "--run-id", "live"), {"RELTEST_SLEEP": "0.3"})
    try:
        wait_for(lambda: len(train_steps(run_dir)) >= 1, 90, p, "a training step")
        r = cli(["--plugin", PLUGIN, "run", "--resume", run_dir])
        assert_one_line_error(r.returncode, r.stderr, str(run_dir), "in use")
        assert summary(run_dir)["status"] == "running" and "resumed" not in summary(run_dir)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    finally:
        stop(p)
    assert summary(run_dir)["status"] == "interrupted"
