"""One run across a process group an outer launcher started (torchrun, srun, a PyTorchJob).

Every process of the group runs ``arcbench run``.  They join one process group
first; rank 0 then prepares the run exactly as for ``--nproc`` (validates,
creates or reopens the run directory, records the start) and the other ranks
learn the run directory and its settings from it through the group, never from
clocks or random suffixes.  Each process then trains as its rank, in-process,
and rank 0 records.  When torch's elastic agent restarts the workers, rank 0
finds the run again (``--run-id``, or the note it left in the runs root) and
every rank resumes it from its last checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Callable, Optional, Tuple

from .cluster import OuterLaunch
from ..config import RecordingConfig, RunConfig
from ..errors import ArcbenchError

#: (option key, flag, the launcher's value): arcbench's own launch flags and what replaces them
_LAUNCH_FLAGS = (("nproc", "--nproc", "local_world_size"), ("nnodes", "--nnodes", "nnodes"),
                 ("node_rank", "--node-rank", "node_rank"), ("master_addr", "--master-addr", "master_addr"),
                 ("master_port", "--master-port", "master_port"))


def launch_flags(o: dict, outer: OuterLaunch, given: Callable[[str], bool]) -> dict:
    """The command line's options with the launcher's layout in place of arcbench's own launch
    flags.  A launch flag given on the command line that disagrees with the launcher is refused:
    the launcher, not arcbench, starts the processes."""
    for key, flag, attr in _LAUNCH_FLAGS:
        want = getattr(outer, attr)
        if key in o and given(key) and o[key] != want:
            hint = " (or ARCBENCH_LAUNCHER=none to ignore RANK/WORLD_SIZE/MASTER_ADDR)" if outer.launcher == "env" else ""
            starter = {"slurm": "srun", "env": "the scheduler"}.get(outer.launcher, outer.launcher)
            raise ArcbenchError(f"{flag} {o[key]} disagrees with the launch ({outer.describe()}): "
                                f"{starter} starts the processes, drop {flag}{hint}")
    if o.get("distributed") is False and outer.world_size > 1:
        raise ArcbenchError(f"--distributed False inside a {outer.launcher} launch of {outer.world_size} processes")
    if o.get("submit"):
        raise ArcbenchError(f"--submit inside a {outer.launcher} launch: submit from a login node instead")
    if o.get("max_restarts") and given("max_restarts"):
        raise ArcbenchError(f"--max-restarts is for arcbench's own launcher; under {outer.launcher} its own "
                            "restart setting applies (torchrun --max-restarts N)")
    if o.get("do_eval") and outer.world_size > 1:
        raise ArcbenchError(f"--do_eval evaluates in one process; start it without {outer.launcher} "
                            f"(world size {outer.world_size})")
    return {**o, "nproc": outer.local_world_size, "nnodes": outer.nnodes, "node_rank": outer.node_rank,
            "master_addr": outer.master_addr, "master_port": outer.master_port, "distributed": None}


def execute(cfg: RunConfig, outer: OuterLaunch, resume: Optional[str] = None, overrides: Optional[dict] = None,
            log=print) -> Tuple[str, dict]:
    """Join the group, let rank 0 prepare the run, train as this rank; returns ``(run_dir, summary)``
    (``run_dir`` empty and the summary unrecorded on ranks other than 0)."""
    from . import collectives, runner
    from .. import registry

    outer.export_env()
    device = registry.require_device(cfg.device)
    collectives.setup(device, outer.rank, outer.world_size, timeout=cfg.dist.dist_timeout,
                      wait=cfg.dist.collective_wait)
    try:
        _bind(device, outer)
        run, run_dir = _prepared(cfg, outer, device, resume, overrides, log)
    except BaseException:
        collectives.teardown()
        raise
    def body(run) -> dict:
        from .worker import worker_main

        worker_dir = _visible(run_dir, run.resumed, outer.rank)
        out = worker_main(run.cfg.to_dict(), worker_dir, run.resumed, rank=outer.rank,
                          local_rank=outer.local_rank, world_size=outer.world_size)
        return {**out, "launcher": outer.launcher}

    return runner.execute_prepared(run, log, body=body)


def _visible(run_dir: str, resumed: bool, rank: int) -> str:
    """The run directory where this rank sees it (its checkpoints and RNG streams), else "".

    Ranks on other nodes see it on a shared file system; a resumed run needs every rank to,
    or those ranks would start again from scratch."""
    from . import collectives

    seen = os.path.isdir(run_dir) if run_dir else False
    blind = [r for r, ok in enumerate(collectives.all_gather_json("launch.sees_run", seen)) if not ok]
    if resumed and blind:
        raise ArcbenchError(f"rank {blind[0]} cannot see the run directory to resume it: with several "
                            "nodes, --out must be on a file system every node sees", run_dir)
    return run_dir if seen else ""


def _bind(device, outer: OuterLaunch) -> None:
    """Every rank binds its LOCAL_RANK's card; one that cannot is named on every rank, in one line."""
    from . import collectives

    error = None
    try:
        device.bind(outer.local_rank)
    except ArcbenchError as exc:
        error = str(exc)
    failed = [(rank, e) for rank, e in enumerate(collectives.all_gather_json("launch.bind", [outer.local_rank, error]))
              if e[1]]
    if failed:
        rank, (local_rank, error) = failed[0]
        more = f" (and {len(failed) - 1} more rank{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
        raise ArcbenchError(f"rank {rank} cannot bind LOCAL_RANK {local_rank} to a {device.name} card: {error}{more}")


def _prepared(cfg, outer: OuterLaunch, device, resume, overrides, log):
    """Rank 0 prepares the run (creates or reopens its directory); every rank gets the same run."""
    from . import collectives, runner

    run, failure, note = None, None, None
    if outer.rank == 0:
        try:
            earlier = _launch_note(cfg.recording, outer) if outer.restart_count else {}
            target = resume or earlier.get("run_dir")
            if outer.restart_count and target and not cfg.recording.quiet:
                log(f"arcbench: {outer.launcher} restarted the workers (restart {outer.restart_count} of "
                    f"{outer.max_restarts}); resuming {target}")
            run = runner.prepare(cfg, target, overrides if target else None)
            if earlier.get("run_dir") == run.run_dir:
                run.started = earlier.get("started")  # the record spans the attempts of this launch
            else:
                _remember(cfg.recording.out, outer, run.run_dir)
            note = {"run_dir": run.run_dir, "cfg": run.cfg.to_dict(), "resumed": run.resumed}
        except BaseException as exc:
            failure = exc
            note = {"error": str(exc) if isinstance(exc, ArcbenchError) else f"{type(exc).__name__}: {exc}"}
    shared = collectives.all_gather_json("launch.run", note)[0]
    if failure is not None:
        raise failure
    if "error" in shared:
        raise ArcbenchError(f"rank 0 could not start the run: {shared['error']}")
    if run is None:
        run = runner.Run(RunConfig.from_dict(shared["cfg"]), "", device, resumed=bool(shared["resumed"]))
    elif not cfg.recording.quiet:
        log(f"arcbench: {outer.describe()}")
    return run, shared["run_dir"]


def _note_path(out: str, outer: OuterLaunch) -> str:
    """Where rank 0 notes its run directory for the restarts of this launch (a hidden file)."""
    key = hashlib.sha1(f"{outer.launcher}|{outer.job}|{outer.master_addr}".encode()).hexdigest()[:16]
    return os.path.join(os.path.abspath(out), f".launch-{key}.json")


def _remember(out: str, outer: OuterLaunch, run_dir: str) -> None:
    from ..record.atomic import write_json

    write_json(_note_path(out, outer), {"run_dir": run_dir, "job": outer.job, "started": time.time()})


def _launch_note(record: RecordingConfig, outer: OuterLaunch) -> dict:
    """On an elastic restart: the run the first attempt started and when ({}: none, start one)."""
    try:
        with open(_note_path(record.out, outer)) as fh:
            note = json.load(fh)
    except (OSError, ValueError):
        note = {}
    note = note if isinstance(note, dict) and isinstance(note.get("run_dir"), str) else {}
    if record.run_id:  # named by the command line: that one, whatever the note says
        from .rundir import sanitize_run_id

        path = os.path.join(os.path.abspath(record.out), sanitize_run_id(record.run_id))
        note = note if note.get("run_dir") == path else {"run_dir": path}
    if not os.path.isdir(note.get("run_dir") or ""):
        return {}
    started = note.get("started")
    return {"run_dir": note["run_dir"], "started": started if isinstance(started, (int, float)) else None}
