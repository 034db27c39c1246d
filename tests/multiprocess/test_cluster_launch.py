"""Launched the way clusters launch: torchrun, srun's environment, a scheduler's variables.

The group an outer launcher starts is ONE run: rank 0 creates the run directory, the
others learn it through the group, the summary counts every rank.  Before this,
``torchrun --nproc_per_node 2 -m arcbench run`` gave two independent one-process runs
(two run directories, each ``nproc 1``).  Real launchers on loopback, CPU and gloo.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testutil import IMPORT_PATH, data_args, free_port, only_run_dir

HERE = Path(__file__).resolve().parents[1]  # tests/

#: variables of an outer launcher that the test process itself may carry; each test sets its own
LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "RANK",
               "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
               "ARCBENCH_LAUNCHER")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = IMPORT_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ARCBENCH_DEBUG", None)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def tiny_run(out, faces, *more):
    return ["run", "--device", "cpu", "--backbone", "tiny", *data_args(faces), "--epochs", "1",
            "--batch-size", "4", "--quiet", "--out", str(out), *more]


# ------------------------------------------------------------------ host lists and detection

@pytest.mark.parametrize("nodelist, first", [("a[1-3]", "a1"), ("a[01-02],b5", "a01"), ("a1", "a1"),
                                             ("node[07,01-04]", "node07"), ("gpu-[10-11].cluster", "gpu-10.cluster")])
def test_the_first_host_of_a_compressed_slurm_host_list_is_the_master(nodelist, first):
    from arcbench.run.cluster import first_host

    assert first_host(nodelist) == first


@pytest.mark.parametrize("nodelist", ["a[1-", "a[3-1]", ""])
def test_a_malformed_host_list_is_one_line(nodelist):
    from arcbench.run.cluster import first_host
    from arcbench.errors import ArcbenchError

    with pytest.raises(ArcbenchError, match="SLURM_JOB_NODELIST"):
        first_host(nodelist)


def slurm_env(rank: int, ntasks: int = 2, nodelist: str = "localhost", job_id: int = 4242, **extra) -> dict:
    return {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": str(ntasks),
            "SLURM_NTASKS_PER_NODE": str(ntasks), "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": nodelist,
            "SLURM_JOB_ID": str(job_id), "SLURM_STEP_ID": "0", **extra}


def test_each_launcher_is_detected_with_its_rank_world_and_master():
    from arcbench.run.cluster import SLURM_PORT_BASE, detect

    assert detect({}) is None
    tr = detect({"TORCHELASTIC_RUN_ID": "j1", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4",
                 "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "29400",
                 "TORCHELASTIC_RESTART_COUNT": "1", "TORCHELASTIC_MAX_RESTARTS": "2"})
    assert (tr.launcher, tr.rank, tr.local_rank, tr.world_size, tr.nnodes, tr.node_rank) == ("torchrun", 3, 1, 4, 2, 1)
    assert (tr.master_addr, tr.master_port, tr.restart_count) == ("n0", 29400, 1)
    assert "world size 4" in tr.describe() and "rank 3" in tr.describe() and "n0:29400" in tr.describe()

    sl = detect(slurm_env(1, nodelist="gpu[03-04]", job_id=123))
    assert (sl.launcher, sl.rank, sl.world_size, sl.master_addr) == ("slurm", 1, 2, "gpu03")
    assert sl.master_port == SLURM_PORT_BASE + 123  # from the job id: two jobs on a node do not collide
    assert detect(slurm_env(1, MASTER_PORT="29999")).master_port == 29999
    assert detect(slurm_env(0, ntasks=1)) is None  # one task of an allocation: an ordinary run

    k8s = detect({"MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2"})
    assert (k8s.launcher, k8s.rank, k8s.world_size, k8s.nnodes, k8s.node_rank) == ("env", 2, 3, 3, 2)
    assert detect({"ARCBENCH_LAUNCHER": "none", **slurm_env(0)}) is None


@pytest.mark.parametrize("env, words", [
    ({"TORCHELASTIC_RUN_ID": "j", "RANK": "0", "WORLD_SIZE": "5", "LOCAL_WORLD_SIZE": "2"}, "not a whole number of nodes"),
    ({"TORCHELASTIC_RUN_ID": "j", "RANK": "4", "WORLD_SIZE": "4"}, "rank 4 is outside world size 4"),
    ({"MASTER_ADDR": "m", "WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' is not a whole number"),
    (slurm_env(0, ntasks=3, SLURM_NTASKS_PER_NODE="2"), "world size 3 is not a whole number of nodes of 2"),
])
def test_a_launcher_environment_that_disagrees_with_itself_is_one_line(env, words):
    from arcbench.run.cluster import detect
    from arcbench.errors import ArcbenchError

    with pytest.raises(ArcbenchError, match=words):
        detect(env)


# ------------------------------------------------------------------ one-line refusals (no group needed)

def arcbench(args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def test_nproc_inside_torchrun_is_refused_in_one_line(tmp_path):
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    p = arcbench(["run", "--device", "cpu", "--train-data", "synthetic", "--nproc", "3",
                  "--out", str(tmp_path / "runs")], clean_env(**torchrun))
    assert p.returncode == 2, p.stdout
    assert p.stdout.strip().splitlines() == [p.stdout.strip()]
    assert "--nproc 3 disagrees with the launch (torchrun launch: world size 2" in p.stdout and "drop --nproc" in p.stdout
    assert not (tmp_path / "runs").exists()
    p = arcbench(["run", "--device", "cpu", "--train-data", "synthetic", "--nnodes", "2",
                  "--out", str(tmp_path / "runs")], clean_env(**torchrun))
    assert p.returncode == 2 and "--nnodes 2 disagrees" in p.stdout, p.stdout


def test_a_slurm_environment_with_a_malformed_host_list_is_refused_in_one_line(tmp_path):
    p = arcbench(["run", "--device", "cpu", "--train-data", "synthetic", "--out", str(tmp_path / "runs")],
                 clean_env(**slurm_env(0, nodelist="node[01-")))
    assert p.returncode == 2, p.stdout
    assert p.stdout.strip().splitlines() == [p.stdout.strip()]
    assert "SLURM_JOB_NODELIST='node[01-' is not a valid host list" in p.stdout
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ real groups on loopback

def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_torchrun_gives_one_run_as_nproc_2_does(tmp_path, faces):
    """torch's own torchrun: one run directory, two ranks, verification sharded, and the same
    accuracy and model as arcbench's own ``--nproc 2``."""
    logs = tmp_path / "collectives"
    logs.mkdir()
    out = tmp_path / "torchrun"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(free_port()), "-m", "arcbench", "--plugin", "tinyplugin",
                        *tiny_run(out, faces)], env=clean_env(ARCBENCH_COLLECTIVE_LOG=str(logs)),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout
    run = only_run_dir(out)  # before: two run directories, each nproc 1
    s = summary(run)
    assert s["status"] == "completed" and s["nproc"] == 2 and s["nnodes"] == 1 and s["launcher"] == "torchrun"
    assert s["samples_per_rank"] == [24, 24]  # 48 images, global batch 8: 6 steps of 4 on each rank
    assert json.loads((run / "system.json").read_text())["world_size"] == 2
    for rank in (0, 1):  # every rank embedded its share of the verification pairs
        names = [json.loads(line)["name"] for line in (logs / f"rank{rank}.jsonl").read_text().splitlines()]
        assert "eval.embeddings" in names
    assert p.stdout.count("run directory:") == 1 and p.stdout.count("status") == 1  # one summary, by rank 0

    own = tmp_path / "own"
    q = arcbench([*tiny_run(own, faces), "--nproc", "2", "--master-port", str(free_port())], clean_env())
    assert q.returncode == 0, q.stdout
    ref = summary(only_run_dir(own))
    for key in ("lfw_accuracy", "lfw_accuracy_exact", "eval_pairs", "final_loss", "steps", "samples_per_rank"):
        assert s.get(key) == ref.get(key), key
    import torch

    a, b = (torch.load(d / "backbone.pth", weights_only=True) for d in (run, only_run_dir(own)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _free_slurm_job_id() -> int:
    from arcbench.run.cluster import SLURM_PORT_BASE, SLURM_PORT_SPAN

    for _ in range(200):
        job = int.from_bytes(os.urandom(3), "big")
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", SLURM_PORT_BASE + job % SLURM_PORT_SPAN))
                return job
            except OSError:
                continue
    pytest.skip("no free port in the Slurm range")


def start_srun_like(args, tmp_path, ntasks=2, **extra):
    job = _free_slurm_job_id()
    procs = [subprocess.Popen([sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", *args],
                              env=clean_env(**slurm_env(rank, ntasks=ntasks, job_id=job), **extra),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(ntasks)]
    return [(p, p.communicate(timeout=300)[0]) for p in procs]


@pytest.mark.slow
def test_an_srun_environment_without_master_addr_gives_one_run(tmp_path, faces):
    out = tmp_path / "runs"
    results = start_srun_like(tiny_run(out, faces), tmp_path)
    assert [p.returncode for p, _ in results] == [0, 0], [o for _, o in results]
    s = summary(only_run_dir(out))
    assert s["status"] == "completed" and s["launcher"] == "slurm"
    assert s["nproc"] * s["nnodes"] == 2 and s["samples_per_rank"] == [24, 24]


@pytest.mark.slow
def test_a_rank_that_cannot_bind_its_local_rank_is_named_in_one_line(tmp_path):
    out = tmp_path / "runs"
    args = ["--plugin", "fakecards", "run", "--device", "fakecard", "--backbone", "tiny", "--train-data",
            "synthetic", "--quiet", "--out", str(out)]
    results = start_srun_like(args, tmp_path, FAKECARDS_COUNT="1")
    for p, output in results:
        assert p.returncode == 2, output
        assert "rank 1 cannot bind LOCAL_RANK 1 to a fakecard card" in output, output
        assert "Traceback" not in output
    assert not out.exists() or not any(out.iterdir())
