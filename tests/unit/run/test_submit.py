"""``arcbench run --submit``: the same run as a batch job through submitit (its local executor here).

The job's tasks each run the same command line and join one group: one run directory,
named at submission, world size = tasks.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cluster_launch import clean_env, tiny_run

pytest.importorskip("submitit")


def test_the_submission_flags_are_not_passed_to_the_tasks():
    from arcbench.run.submit import strip_submit_flags

    argv = ["--plugin", "p", "run", "--submit", "slurm", "--partition=gpu", "--nodes", "2", "--gpus-per-node", "4",
            "--time-limit", "60", "--epochs", "3", "--nproc", "1"]
    assert strip_submit_flags(argv) == ["--plugin", "p", "run", "--epochs", "3", "--nproc", "1"]


def arcbench(*args):
    return subprocess.run([sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", *args], env=clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)


def test_slurm_without_a_partition_and_a_resubmitted_resume_are_one_line(tmp_path):
    p = arcbench("run", "--submit", "slurm", "--out", str(tmp_path / "runs"))
    assert p.returncode == 2 and p.stdout.strip() == "arcbench: error: --submit slurm needs --partition"
    p = arcbench("run", "--submit", "local", "--resume", str(tmp_path))
    assert p.returncode == 2 and "--submit starts a new training run" in p.stdout


@pytest.mark.slow
def test_a_job_submitted_with_the_local_executor_is_one_run(tmp_path, faces):
    out = tmp_path / "runs"
    p = arcbench(*tiny_run(out, faces), "--submit", "local", "--gpus-per-node", "2")
    assert p.returncode == 0, p.stdout
    assert re.search(r"submitted job \S+ \(local, 1 node\(s\) x 2\)", p.stdout), p.stdout
    run_dir = Path(re.search(r"run directory: (\S+)", p.stdout).group(1))
    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline:
        try:
            status = json.loads((run_dir / "summary.json").read_text())["status"]
        except (OSError, ValueError, KeyError):
            status = None
        if status not in (None, "running"):
            break
        time.sleep(2)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "completed", s
    jobs = out / ".submitit"
    while time.monotonic() < deadline and len(list(jobs.glob("*/*_result.pkl"))) < 2:
        time.sleep(1)  # both tasks have ended (nothing left running when the test's folder goes)
    assert len(list(jobs.glob("*/*_result.pkl"))) == 2
    assert s["nproc"] * s["nnodes"] == 2 and s["samples_per_rank"] == [24, 24]
    assert [d for d in out.iterdir() if d.is_dir() and not d.name.startswith(".")] == [run_dir]
