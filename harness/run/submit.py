"""``arcbench run --submit slurm``: the same run as a batch job, submitted with submitit.

The job starts one task per card (``--nodes`` x ``--gpus-per-node``); each task
runs the same ``arcbench`` command line and joins the group as one rank
(:mod:`arcbench.run.group_run`), so the job is one run.  Its run id is chosen at
submission, so the run directory is known before the job starts.  ``--submit
local`` runs the job on this machine through submitit's local executor (a dry
run of the job, and what the tests use).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Sequence

from .cluster import SLURM_PORT_BASE, SLURM_PORT_SPAN
from ..errors import ArcbenchError

#: the flags that describe the submission: they are not passed on to the job's tasks
SUBMIT_FLAGS = ("--submit", "--partition", "--nodes", "--gpus-per-node", "--time-limit")


def task_command(argv: Sequence[str]) -> int:
    """One task of the job: this task's place in the job as the variables ``env://`` reads,
    then the command line; its exit status is the task's."""
    import submitit

    job = submitit.JobEnvironment()
    per_node = max(1, job.num_tasks // max(1, job.num_nodes))
    digits = "".join(ch for ch in str(job.job_id) if ch.isdigit()) or "0"
    env = dict(os.environ, RANK=str(job.global_rank), LOCAL_RANK=str(job.local_rank),
               WORLD_SIZE=str(job.num_tasks), LOCAL_WORLD_SIZE=str(per_node),
               MASTER_ADDR=os.environ.get("MASTER_ADDR") or job.hostnames[0],
               MASTER_PORT=os.environ.get("MASTER_PORT") or str(SLURM_PORT_BASE + int(digits) % SLURM_PORT_SPAN))
    code = subprocess.call([sys.executable, "-m", "arcbench", *argv], env=env)
    if code:
        raise RuntimeError(f"arcbench exited with {code} on rank {job.global_rank}")
    return code


def strip_submit_flags(argv: Sequence[str]) -> List[str]:
    """The command line without the submission's own flags (``--x v`` and ``--x=v`` forms)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in SUBMIT_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def submit(argv: Sequence[str], *, cluster: str, out: str, run_id: str, partition, nodes: int,
           gpus_per_node: int, time_limit: int):
    """Submit the job; returns ``(job_id, run_dir)``."""
    try:
        import submitit
    except ImportError:
        raise ArcbenchError("--submit needs submitit: pip install 'arcbench[slurm]'") from None
    folder = os.path.join(os.path.abspath(out), ".submitit", "%j")
    if cluster == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(tasks_per_node=nodes * gpus_per_node, timeout_min=time_limit)
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(nodes=nodes, tasks_per_node=gpus_per_node, gpus_per_node=gpus_per_node,
                                   timeout_min=time_limit, slurm_partition=partition, name="arcbench")
    try:
        job = executor.submit(task_command, [*argv, "--run-id", run_id])
    except Exception as exc:  # sbatch missing or refusing the request
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ArcbenchError(f"--submit {cluster}: the job was not submitted ({first})") from None
    return job, os.path.join(os.path.abspath(out), run_id)
