"""Multi-process and multi-node runs on torch's own elastic launcher.

``--nproc N`` starts N workers on this node through
``torch.distributed.launcher.api.elastic_launch`` (the engine behind
``torchrun``); ``--nnodes/--node-rank/--master-addr/--master-port`` join
several nodes with the static rendezvous, exactly like ``torchrun``.  The
agent watches the workers: when one dies the others are stopped and the run
is recorded as ``failed`` with the reason, instead of hanging in a
collective.  With ``--max-restarts N`` the agent instead starts every worker
again, up to N times, and they resume from the run's last checkpoint
(:mod:`arcbench.run.restarts` keeps the record).
"""
from __future__ import annotations

import os

from ..config import DistConfig, RunConfig
from ..errors import ArcbenchError
from .restarts import SECONDARY as _SECONDARY  # messages of ranks that only noticed another one go


def _single_node_port(dist: DistConfig) -> int:
    """The rendezvous port: as given for several nodes; on one node a busy port (another run,
    a bench repeat) is swapped for a free one, since no other node needs to know it."""
    import socket

    if dist.nnodes > 1:
        return dist.master_port
    with socket.socket() as s:
        try:
            s.bind((dist.master_addr, dist.master_port))
            return dist.master_port
        except OSError:
            pass
    with socket.socket() as s:
        s.bind((dist.master_addr, 0))
        return s.getsockname()[1]


def launch_config(dist: DistConfig, monitor_interval: float = 0.5):
    from torch.distributed.launcher.api import LaunchConfig

    port = _single_node_port(dist)
    endpoint = f"{dist.master_addr}:{port}"
    return LaunchConfig(
        min_nodes=dist.nnodes, max_nodes=dist.nnodes, nproc_per_node=dist.nproc,
        # every node must name the same rendezvous, and only node 0 knows the run id
        run_id=f"arcbench-{dist.master_addr}-{port}",
        rdzv_backend="static", rdzv_endpoint=endpoint,
        rdzv_configs={"rank": dist.node_rank, "timeout": 300},
        max_restarts=dist.max_restarts, monitor_interval=monitor_interval, start_method="spawn",
    )


class WorkersFailed(Exception):
    """Some worker ended badly; ``reason`` names each failed rank, the likely root cause first.
    ``interrupted``: every failed rank was stopped by a signal (Ctrl-C, SIGTERM), none broke."""

    def __init__(self, reason: str, interrupted: bool = False):
        super().__init__(reason)
        self.reason, self.interrupted = reason, interrupted


def launch(cfg: RunConfig, run_dir: str, resume: bool) -> dict:
    """Start this node's workers and wait for them; returns each local rank's outcome by rank.
    The run directory is the runner's to record in, not this module's."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    from .signals import handlers_kept
    from .worker import worker_main

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.dist.nproc)))
    _quiet_torch_logs()
    try:
        with handlers_kept():  # the agent's own handlers do not outlive the launch
            outputs = elastic_launch(launch_config(cfg.dist), worker_main)(cfg.to_dict(), run_dir, resume)
    except ChildFailedError as exc:
        raise WorkersFailed(_failure_reason(exc), _all_interrupted(exc)) from None
    except SignalException as exc:  # Ctrl-C or SIGTERM reached the agent: it stopped the workers
        raise KeyboardInterrupt(str(exc)) from None
    except Exception as exc:  # rendezvous failures and the like
        raise ArcbenchError(f"distributed launch failed: {exc}") from exc
    return dict(outputs) if isinstance(outputs, dict) else {}


def _all_interrupted(exc) -> bool:
    from .worker import INTERRUPTED_EXIT

    codes = [failure.exitcode for failure in getattr(exc, "failures", {}).values()]
    return bool(codes) and all(code in (INTERRUPTED_EXIT, -2, -15) for code in codes)


def _quiet_torch_logs() -> None:
    """The agent logs a worker's death with a traceback; arcbench reports it in one line
    instead (the summary's reason).  ``--debug`` keeps torch's logs."""
    import logging

    if os.environ.get("ARCBENCH_DEBUG"):
        return
    prefixes = ("torch.distributed.elastic", "torch.multiprocessing.spawn", "torch.distributed.launcher")
    # torch gives some of its modules' loggers a level of their own, so each one is set, not just the parents
    names = [n for n in logging.root.manager.loggerDict if n.startswith(prefixes)]
    for name in set(prefixes) | set(names):
        logging.getLogger(name).setLevel(logging.CRITICAL)




def _failure_reason(exc) -> str:
    """One line naming each failed rank and how it ended, the likely root cause first."""
    import signal

    from .worker import INTERRUPTED_EXIT

    rows = []
    for rank, failure in getattr(exc, "failures", {}).items():
        code = failure.exitcode
        if code == INTERRUPTED_EXIT:
            what = "stopped by a signal"
        elif code is not None and code < 0:
            try:
                what = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exit code {code}"
        err = getattr(failure, "message", None)
        if isinstance(err, dict):
            err = err.get("message", "")
        msg = str(err or "").strip()
        if msg.startswith("To enable traceback") or msg.startswith("Signal "):
            msg = ""  # torch's filler when the process left no error file
        msg = msg.splitlines()[-1][:300] if msg else ""
        secondary = (bool(msg) and any(s in msg.lower() for s in _SECONDARY)) or code == INTERRUPTED_EXIT
        rows.append(((secondary, getattr(failure, "timestamp", 0) or 0, int(rank)),
                     f"worker rank {rank} {what}" + (f": {msg}" if msg else "")))
    rows.sort(key=lambda r: r[0])
    return "; ".join(text for _, text in rows) or (str(exc).strip().splitlines() or ["worker failed"])[0][:300]
