"""The accuracy a multi-process run records is the accuracy of the backbone it exports.

DDP runs with ``broadcast_buffers=False``, so every rank's BatchNorm running
statistics drift apart, and verification is sharded over the ranks.  Before
rank 0's buffers were broadcast ahead of verification, each rank embedded its
share with its own statistics: the summary's figure belonged to a mixture of
models nobody saved (seen failing: AUC and std differed from ``arcbench eval``
of ``backbone.pth``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testutil import IMPORT_PATH, free_port, only_run_dir

HERE = Path(__file__).resolve().parents[1]  # tests/
pytestmark = pytest.mark.slow


def _arcbench(args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = IMPORT_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ARCBENCH_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)


def test_two_process_run_records_the_exported_backbones_accuracy(tmp_path):
    faces = tmp_path / "faces"
    p = _arcbench(["data", "synth", "-o", str(faces), "--identities", "12", "--images-per-identity", "4",
                   "--verify-identities", "30", "--pairs", "12"])
    assert p.returncode == 0, p.stderr
    out = tmp_path / "runs"
    common = ["--val-data", str(faces / "verify"), "--val-pairs", str(faces / "pairs.txt"), "--eval-batch-size", "16"]
    p = _arcbench(["run", "--device", "cpu", "--backbone", "tiny", "--train-data", str(faces / "train"),
                   "--epochs", "2", "--eval-every", "0", "--batch-size", "8", "--nproc", "2", "--workers", "0",
                   "--quiet", "--out", str(out), "--master-port", str(free_port()), *common])
    assert p.returncode == 0, p.stdout + p.stderr
    run = only_run_dir(out)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and s["lfw_accuracy"] is not None
    p = _arcbench(["eval", "--device", "cpu", "--backbone", "tiny", "--weights", str(run / "backbone.pth"),
                   "--workers", "0", "--json", *common])
    assert p.returncode == 0, p.stderr
    e = json.loads(p.stdout)
    assert e["num_images"] > 2 * 16  # both ranks embedded a share
    # exactly: the same weights, batches and arithmetic, so the same distances
    assert (s["lfw_accuracy"], s["lfw_accuracy_std"], s["auc"], s["eer"]) == \
           (e["accuracy"], e["accuracy_std"], e["auc"], e["eer"])
