"""Multi-process (gloo) runs on the CPU through torch's elastic launcher.

One node with --nproc 2, and two nodes of one process each on 127.0.0.1
(two launcher processes).  The tiny backbone keeps each run to seconds.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testutil import IMPORT_PATH, free_port

HERE = Path(__file__).resolve().parents[1]  # tests/
pytestmark = pytest.mark.slow


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = IMPORT_PATH + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("ARCBENCH_DEBUG", None)
    e["OMP_NUM_THREADS"] = "1"
    return e


def arcbench(*args, timeout=240):
    cmd = [sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", *args]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def common(out):
    return ["run", "--device", "cpu", "--backbone", "tiny", "--train-data", "synthetic",
            "--synthetic-classes", "10", "--synthetic-steps", "6", "--epochs", "1", "--batch-size", "4",
            "--quiet", "--out", str(out)]


def summary_of(out: Path) -> dict:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return json.loads((dirs[0] / "summary.json").read_text())


def test_two_processes_on_one_node_record_global_throughput(tmp_path):
    out = tmp_path / "runs"
    p = arcbench(*common(out), "--nproc", "2", "--master-port", str(free_port()))
    output, _ = p.communicate(timeout=240)
    assert p.returncode == 0, output
    s = summary_of(out)
    assert s["status"] == "completed" and s["nproc"] == 2
    assert s["batch_size"] == 8 and s["per_process_batch"] == 4
    assert s["samples_per_rank"] == [24, 24]  # 6 steps x 4 images on each rank
    assert s["steps"] == 6 and s["throughput_median"] > 0
    assert s["synthetic"] is True


def test_two_nodes_on_localhost_complete_a_short_run(tmp_path):
    port = str(free_port())
    out0, out1 = tmp_path / "node0", tmp_path / "node1"
    nodes = [arcbench(*common(out), "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
                      "--master-port", port) for rank, out in ((0, out0), (1, out1))]
    outputs = [p.communicate(timeout=240)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs
    s = summary_of(out0)  # node 0 records; node 1 trains without a run directory
    assert s["status"] == "completed" and s["nnodes"] == 2
    assert s["samples_per_rank"] == [24, 24]
    assert not out1.exists() or not any(out1.iterdir())


def test_a_busy_port_is_swapped_on_one_node_but_kept_across_nodes():
    from arcbench.config import RunConfig
    from arcbench.run.launcher import _single_node_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one = RunConfig(master_addr="127.0.0.1", master_port=port, nproc=2)
        assert _single_node_port(one.dist) != port
        assert _single_node_port(one.replace(nnodes=2).dist) == port  # every node must name the same port
    assert _single_node_port(one.dist) == port  # free again: kept as given
