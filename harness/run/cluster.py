"""Which launcher started this process: torchrun, Slurm's srun, or a scheduler's environment.

On a cluster arcbench is one worker of a process group something else
started; :func:`detect` reads that launcher's environment variables into an
:class:`OuterLaunch` (rank, world size, master address), so every worker joins
the same group and the group is one run.  ``ARCBENCH_LAUNCHER=none`` turns
detection off (arcbench's own ``--nproc`` launcher inside a Slurm allocation
whose variables describe something else).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from ..errors import ArcbenchError

LAUNCHER_ENV = "ARCBENCH_LAUNCHER"
#: Slurm jobs without MASTER_PORT take one from their job id, so two jobs on a node do not collide
SLURM_PORT_BASE, SLURM_PORT_SPAN = 15000, 20000
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class OuterLaunch:
    """This process's place in a process group started by an outer launcher."""

    launcher: str            # torchrun | slurm | env
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    restart_count: int = 0   # torch elastic: how many times the agent restarted the workers
    max_restarts: int = 0
    job: str = ""            # what names this launch across restarts (rendezvous id, Slurm job/step)

    @property
    def nnodes(self) -> int:
        return self.world_size // self.local_world_size

    def describe(self) -> str:
        text = (f"{self.launcher} launch: world size {self.world_size} ({self.nnodes} node"
                f"{'' if self.nnodes == 1 else 's'} x {self.local_world_size}), rank {self.rank} "
                f"(local rank {self.local_rank}, node {self.node_rank}), master {self.master_addr}:{self.master_port}")
        if self.restart_count:
            text += f", restart {self.restart_count} of {self.max_restarts}"
        return text

    def export_env(self) -> None:
        """The variables ``init_process_group("env://")`` reads (Slurm sets none of them)."""
        os.environ.update(MASTER_ADDR=self.master_addr, MASTER_PORT=str(self.master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK=str(self.local_rank),
                          LOCAL_WORLD_SIZE=str(self.local_world_size))


def _int(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise ArcbenchError(f"{name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ArcbenchError(f"{name}={value!r} is not a whole number") from None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list (``node[01-04,07],gpu5`` -> ``node01``)."""
    try:
        import hostlist
    except ImportError:  # a dependency; only a broken install lacks it
        raise ArcbenchError("reading SLURM_JOB_NODELIST needs python-hostlist (pip install python-hostlist)") from None
    try:
        hosts = hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as exc:
        raise ArcbenchError(f"SLURM_JOB_NODELIST={nodelist!r} is not a valid host list ({exc})") from None
    if not hosts:
        raise ArcbenchError(f"SLURM_JOB_NODELIST={nodelist!r} names no host")
    return hosts[0]


def _tasks_per_node(value: str) -> int:
    """Slurm's ``2(x3),1`` form: the first node's count."""
    head = value.split(",")[0].split("(")[0]
    try:
        return int(head)
    except ValueError:
        raise ArcbenchError(f"SLURM_NTASKS_PER_NODE={value!r} is not a task count") from None


def _checked(launch: OuterLaunch, what: str) -> OuterLaunch:
    if launch.world_size < 1 or not 0 <= launch.rank < launch.world_size:
        raise ArcbenchError(f"{what}: rank {launch.rank} is outside world size {launch.world_size}")
    if launch.local_world_size < 1 or not 0 <= launch.local_rank < launch.local_world_size:
        raise ArcbenchError(f"{what}: local rank {launch.local_rank} is outside {launch.local_world_size} "
                            "processes per node")
    if launch.world_size % launch.local_world_size:
        raise ArcbenchError(f"{what}: world size {launch.world_size} is not a whole number of nodes of "
                            f"{launch.local_world_size} processes (arcbench needs as many on every node)")
    if not 1 <= launch.master_port <= 65535:
        raise ArcbenchError(f"{what}: master port {launch.master_port} is outside 1..65535")
    return launch


def _torchrun(env: Mapping[str, str]) -> OuterLaunch:
    world, local_world = _int(env, "WORLD_SIZE"), _int(env, "LOCAL_WORLD_SIZE", 1)
    rank = _int(env, "RANK")
    return _checked(OuterLaunch(
        "torchrun", rank=rank, local_rank=_int(env, "LOCAL_RANK", 0), world_size=world,
        local_world_size=local_world, node_rank=_int(env, "GROUP_RANK", rank // max(1, local_world)),
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1", master_port=_int(env, "MASTER_PORT", DEFAULT_PORT),
        restart_count=_int(env, "TORCHELASTIC_RESTART_COUNT", 0), max_restarts=_int(env, "TORCHELASTIC_MAX_RESTARTS", 0),
        job=env.get("TORCHELASTIC_RUN_ID", "")), "torchrun")


def _slurm(env: Mapping[str, str]) -> OuterLaunch:
    world = _int(env, "SLURM_NTASKS")
    local_world = _tasks_per_node(env["SLURM_NTASKS_PER_NODE"]) if env.get("SLURM_NTASKS_PER_NODE") \
        else _tasks_per_node(env.get("SLURM_TASKS_PER_NODE") or str(world))
    job_id = _int(env, "SLURM_JOB_ID", 0)
    if env.get("MASTER_ADDR"):
        addr = env["MASTER_ADDR"]
    else:
        addr = first_host(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "")
    port = _int(env, "MASTER_PORT", SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN)
    rank = _int(env, "SLURM_PROCID")
    return _checked(OuterLaunch(
        "slurm", rank=rank, local_rank=_int(env, "SLURM_LOCALID", 0), world_size=world,
        local_world_size=local_world, node_rank=_int(env, "SLURM_NODEID", rank // max(1, local_world)),
        master_addr=addr, master_port=port, job=f"slurm-{job_id}.{env.get('SLURM_STEP_ID', '')}"), "Slurm")


def _plain(env: Mapping[str, str]) -> OuterLaunch:
    world, local_world = _int(env, "WORLD_SIZE"), _int(env, "LOCAL_WORLD_SIZE", 1)
    rank = _int(env, "RANK")
    return _checked(OuterLaunch(
        "env", rank=rank, local_rank=_int(env, "LOCAL_RANK", 0), world_size=world, local_world_size=local_world,
        node_rank=rank // max(1, local_world), master_addr=env["MASTER_ADDR"],
        master_port=_int(env, "MASTER_PORT", DEFAULT_PORT), job=f"env-{env['MASTER_ADDR']}"), "environment")


def detect(env: Optional[Mapping[str, str]] = None) -> Optional[OuterLaunch]:
    """The outer launcher this process runs under, or None (arcbench launches its own workers).

    torchrun (``TORCHELASTIC_RUN_ID``) first; then ``srun`` (``SLURM_PROCID`` with
    ``SLURM_NTASKS`` > 1: one task in a Slurm allocation is an ordinary run); then
    ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` as Kubernetes' PyTorchJob sets them.
    Malformed variables are a one-line :class:`ArcbenchError`."""
    env = os.environ if env is None else env
    if env.get(LAUNCHER_ENV, "").lower() == "none":
        return None
    if env.get("TORCHELASTIC_RUN_ID") is not None and env.get("WORLD_SIZE"):
        return _torchrun(env)
    if env.get("SLURM_PROCID") is not None and _int(env, "SLURM_NTASKS", 1) > 1:
        return _slurm(env)
    if env.get("WORLD_SIZE") and env.get("RANK") is not None and env.get("MASTER_ADDR"):
        return _plain(env)
    return None
