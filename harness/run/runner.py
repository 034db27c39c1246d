"""One run's life, from config to run directory: prepare, train (or verify), record the outcome.

The runner is the only writer of a run's ``summary.json`` and ``system.json``.
It validates the config, resolves the data, creates (or reopens and locks)
the run directory and writes ``config.json``/``system.json``/``summary.json``
(status ``running``) *before* any training starts, so a bad path or an
unwritable disk fails early.  Workers (1 in-process, or N through torch's
elastic launcher) train and return their outcome; whatever happens --
success, a bad input, NaN, Ctrl-C, a dead worker -- the runner records the
status, the reason, the figures and the segment.
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from . import restarts, segments
from ..config import AMP_DTYPES, RunConfig
from ..verification.sets import run_set_names
from ..data.synth import is_generated
from ..errors import ArcbenchError
from ..record.recorder import Recorder
from .rundir import RunLock, check_writable, create_run_dir, remove_stale_temporaries, system_info

INTERRUPTED = "interrupted by signal; resume with --resume"


class RunFailed(Exception):
    """The run started and then failed; its summary says why (exit code 1)."""

    exit_code = 1


@dataclass
class Run:
    """A prepared run: its settings, its directory (empty on nodes other than 0), its device,
    and the lock on its directory, held until :meth:`release`."""

    cfg: RunConfig
    run_dir: str
    device: object
    lock: Optional[RunLock] = None
    resumed: bool = False
    #: the run directory's files as the runner last wrote them (None on nodes that do not record)
    rec: Optional[Recorder] = None
    system: Optional[dict] = None
    #: when this launch began, where it spans several process starts (torchrun's elastic restarts)
    started: Optional[float] = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def resolve_data(cfg: RunConfig) -> RunConfig:
    """Fill in the embedded synthetic-faces set where no data was given."""
    changes = {}
    if cfg.mode == "train" and cfg.data.train_data is None:
        from ..data.synth import default_dataset

        # say what the pause is: generating the set takes seconds, once
        root = str(default_dataset(log=None if cfg.recording.quiet else (lambda m: print(m, flush=True))))
        changes.update(train_data=os.path.join(root, "train"),
                       annotation=os.path.join(root, "cls_train.txt"))
        if not (cfg.data.val_data or cfg.data.val_bin):
            changes.update(val_data=os.path.join(root, "verify"), val_pairs=os.path.join(root, "pairs.txt"))
    return cfg.replace(**changes) if changes else cfg


def base_summary(cfg: RunConfig, run_dir: str, device) -> dict:
    ok = device.is_available()[0]
    synthetic = is_generated(cfg.data.train_data) or (cfg.mode == "eval" and is_generated(cfg.data.val_data))
    return {
        "run_id": os.path.basename(run_dir), "mode": cfg.mode, "status": "running", "reason": None,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device.name, "device_name": device.device_name() if ok else None,
        "backbone": cfg.model.backbone, "head": cfg.model.head, "precision": cfg.optim.precision, "amp": cfg.amp,
        "amp_dtype": AMP_DTYPES.get(cfg.optim.amp_dtype) if cfg.amp else None,
        "compile_mode": (cfg.optim.compile_mode or "default") if cfg.optim.compile else None,
        "eval_precision": cfg.eval.eval_precision if cfg.mode == "train" else None, "lr_schedule": cfg.schedule.lr_schedule,
        "nproc": cfg.dist.nproc, "nnodes": cfg.dist.nnodes, "batch_size": cfg.schedule.batch_size,
        "per_process_batch": cfg.per_process_batch, "lr": cfg.effective_lr(),
        # named from the first moment, as the completed run will name them
        **dict(zip(("train_set", "eval_set"), run_set_names(cfg))), "synthetic": synthetic,
    }


def _checked(cfg: RunConfig):
    """Validate ``cfg`` against the registries; returns it with the device resolved, and the device."""
    from .. import registry

    cfg.validate()
    if cfg.mode == "eval" and not cfg.model.weights:
        raise ArcbenchError("evaluation (--do_eval True) needs --model_path/--weights")
    if cfg.mode == "eval" and not (cfg.data.val_data or cfg.data.val_bin):
        raise ArcbenchError("evaluation needs --val-data with --val-pairs, or --val-bin")
    device = registry.require_device(cfg.device)
    if cfg.data.decode == "device" and cfg.data.train_data != "synthetic":
        from ..data.device_decode import check

        check(device)  # one line, before a run directory is made
    registry.get_backbone(cfg.model.backbone)
    registry.get_head(cfg.model.head)
    cards = device.device_count()
    if cfg.dist.nproc > max(1, cards):
        raise ArcbenchError(f"--nproc {cfg.dist.nproc}: {cfg.dist.nproc} processes but {cards} {device.name} "
                            f"card{'' if cards == 1 else 's'} on this node (one process per card)")
    return _device_settings(cfg.replace(device=device.name), device), device


def _device_settings(cfg: RunConfig, device) -> RunConfig:
    """The run's precision and compile settings as this device runs them (recorded in config.json)."""
    if cfg.optim.compile_mode and cfg.optim.compile_mode not in device.compile_modes:
        raise ArcbenchError(f"--compile-mode {cfg.optim.compile_mode} is not supported on {device.name} "
                            f"(supported: {', '.join(device.compile_modes)})")
    if cfg.amp and cfg.optim.amp_dtype is None:
        cfg = cfg.replace(amp_dtype=device.default_amp_dtype())
    device.configure(deterministic=cfg.optim.deterministic)  # before system.json records the settings
    return cfg


def _reopen(resume: str, overrides: Optional[dict]) -> Tuple[RunConfig, RunLock]:
    """The saved config of the run in ``resume``, continued with ``overrides``, and its lock."""
    if not os.path.isdir(resume):
        raise ArcbenchError("--resume: run directory not found" if not os.path.exists(resume)
                            else "--resume: expected a run directory, got a file", resume)
    cfg_path = os.path.join(resume, "config.json")
    if not os.path.exists(cfg_path):
        raise ArcbenchError("not a run directory (no config.json)", resume)
    saved = RunConfig.load(cfg_path)
    overrides = overrides or {}
    segments.refuse_completed(resume, saved.schedule, overrides)
    lock = RunLock(os.path.abspath(resume)).acquire()  # before anything in it is rewritten
    return saved.resumed(**overrides), lock


def prepare(cfg: Optional[RunConfig], resume: Optional[str] = None, overrides: Optional[dict] = None) -> Run:
    """Validate, resolve data and create (or reopen) the run directory, holding its lock."""
    lock = None
    try:
        if resume:
            cfg, lock = _reopen(resume, overrides)
        cfg, device = _checked(cfg)
        cfg = resolve_data(cfg)
        check_inputs(cfg)  # before a run directory exists
        if resume:
            run_dir = os.path.abspath(resume)
            check_writable(run_dir)
            remove_stale_temporaries(run_dir)
        elif cfg.dist.node_rank == 0:
            run_dir = create_run_dir(cfg.recording.out, cfg.recording.run_id, backbone=cfg.model.backbone, device=device.name, mode=cfg.mode)
            lock = RunLock(run_dir).acquire()
        else:
            run_dir = ""  # non-zero nodes train but do not record
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    run = Run(cfg.replace(run_id=os.path.basename(run_dir)) if run_dir else cfg, run_dir, device, lock, bool(resume))
    if run_dir:
        _record_start(run)
    return run


def _record_start(run: Run) -> None:
    rec = run.rec = Recorder(run.run_dir)
    rec.write_json("config.json", run.cfg.to_dict())
    run.system = system_info(run.device, run.cfg.world_size)
    rec.write_json("system.json", run.system)
    summary = base_summary(run.cfg, run.run_dir, run.device)
    if run.resumed:
        summary.update({k: v for k, v in rec.summary.items()
                        if k in ("date", "train_set", "eval_set") and v is not None})
        summary["resumed"] = int(rec.summary.get("resumed") or 0) + 1
        # the earlier segments stay on record whatever happens to this one
        summary["segments"] = segments.past_segments(rec.summary) + _killed(run, rec.summary)
        summary["wall_time"] = segments.total_wall_time(summary["segments"])
    # when and where this segment began: what a kill -9 leaves for the next --resume to record
    summary.update(segment_started=round(time.time(), 3), segment_host=(run.system or {}).get("host"))
    rec.summary = {}
    rec.update_summary(**summary)


def _killed(run: Run, previous: dict) -> list:
    """The segment a killed process left open (its summary still said running), as a list of 0 or 1."""
    if previous.get("status") != "running" or run.cfg.mode == "eval":
        return []
    if restarts.attempt() > 0:  # an elastic restart: segments.closed() records that attempt as restarted
        return []
    from ..train.checkpoints import saved_progress

    seg = segments.killed_segment(run.run_dir, previous, saved_progress(run.run_dir).get("steps"))
    return [seg] if seg else []


def execute(cfg: Optional[RunConfig], resume: Optional[str] = None, log=print, fresh_process: bool = False,
            overrides: Optional[dict] = None, body: Optional[Callable[[Run], dict]] = None) -> Tuple[str, dict]:
    """Run training (or eval) end to end; returns ``(run_dir, summary)``.

    ``resume``: continue that run directory (``overrides``: the flags given with it: epochs,
    max_steps, nproc, quiet).  ``fresh_process``: even one process is started through the
    launcher (``bench --repeat``).  ``body(run) -> outcome`` replaces training (bench points)."""
    return execute_prepared(prepare(cfg, resume, overrides), log, fresh_process, body)


def execute_prepared(run: Run, log=print, fresh_process: bool = False,
                     body: Optional[Callable[[Run], dict]] = None) -> Tuple[str, dict]:
    """:func:`execute` for a run already prepared (by rank 0 of an outer launcher's group)."""
    try:
        return _execute(run, log, fresh_process, body)
    except (KeyboardInterrupt, RunFailed) as exc:
        exc.run_dir = run.run_dir  # the command line prints the exact resume command
        raise
    finally:
        run.release()


def _execute(run: Run, log, fresh_process: bool, body) -> Tuple[str, dict]:
    cfg = run.cfg
    if run.run_dir and not cfg.recording.quiet:
        log(f"arcbench: run directory {run.run_dir}")
    start = run.started or time.time()
    try:
        outcome = _outcome(run, fresh_process, body)
    except KeyboardInterrupt as exc:
        if not restarts.will_restart(exc):  # else the restarted attempt records this one
            _finish(run, start, {"status": "interrupted", "reason": INTERRUPTED, **getattr(exc, "outcome", {})})
        raise
    except BaseException as exc:
        if not restarts.will_restart(exc):
            _finish(run, start, _failure(exc))
        raise
    summary = _finish(run, start, outcome)
    if summary.get("status") != "completed":  # on every node: a node whose workers failed exits 1
        where = f" ({run.run_dir})" if run.run_dir else ""
        raise RunFailed(f"run {summary.get('status')}: {summary.get('reason')}{where}")
    return run.run_dir, summary


def _outcome(run: Run, fresh_process: bool, body) -> dict:
    """How the run's work ended: the workers' (rank 0's) outcome, an eval run's, or a bench body's."""
    cfg = run.cfg
    if body is not None:
        return body(run)
    if cfg.mode == "eval":
        return evaluate_only(run)
    if cfg.world_size == 1 and not fresh_process and not cfg.dist.max_restarts:
        from .worker import worker_main

        return worker_main(cfg.to_dict(), run.run_dir, run.resumed, rank=0, local_rank=0, world_size=1)
    from .launcher import WorkersFailed, launch

    try:
        outcomes = launch(cfg, run.run_dir, run.resumed)
        return outcomes[min(outcomes)] if outcomes else {}  # rank 0's on node 0: the run's figures
    except WorkersFailed as exc:
        if exc.interrupted:
            return {"status": "interrupted", "reason": INTERRUPTED}
        return {"status": "failed", "reason": exc.reason}


def _failure(exc: BaseException) -> dict:
    reason = str(exc) if isinstance(exc, ArcbenchError) else f"{type(exc).__name__}: {exc}"[:500]
    return {"status": "failed", "reason": reason, **getattr(exc, "outcome", {})}


def _finish(run: Run, start: float, outcome: dict) -> dict:
    """Record the outcome and this segment; however the run ended, it is on record."""
    if not run.run_dir:
        return outcome
    rec = run.rec  # the runner's own summary, in memory: it is the file's only writer
    fields = dict(outcome)
    if fields.get("status") != "completed" and "steps" not in fields and run.cfg.mode != "eval":
        # launched workers that stopped early could not return their figures: what they saved
        from ..train.checkpoints import saved_progress

        fields.update(start_step=segments.start_step(rec.summary), **saved_progress(run.run_dir))
    fields["synthetic"] = bool(rec.summary.get("synthetic") or fields.get("synthetic"))
    if fields.get("card_per_rank"):
        # which card each rank ran on (from the workers' final gather)
        placements = [{"rank": r, "device": run.device.name, "card": c}
                      for r, c in enumerate(fields["card_per_rank"])]
        rec.write_json("system.json", {**run.system, "placements": placements})
    rec.update_summary(**fields)
    if run.cfg.mode == "eval":
        return rec.update_summary(wall_time=round(time.time() - start, 3))
    return rec.update_summary(**segments.closed(rec.summary, start, restarts.since(run.run_dir, start)))


def annotate(run_dir: str, **fields) -> dict:
    """Figures derived after the run (``bench``'s ratios across its points) added to its summary."""
    return Recorder(run_dir).update_summary(**fields)


def evaluate_only(run: Run) -> dict:
    """The seed's ``--do_eval True``: verify given weights on every set, recorded as an eval run."""
    from ..record.plots import write_roc
    from .run_data import open_verification_sets
    from ..verification.epoch import headline_figures, set_figures
    from ..verification.evaluate import evaluate_weights
    from ..record.train_log import set_key

    cfg = run.cfg
    run.device.bind(0)  # one process: the first visible card
    vsets = open_verification_sets(cfg.data)
    rec = run.rec
    results = []
    for i, vset in enumerate(vsets):
        start = run.device.timestamp()
        r = evaluate_weights(cfg.model.backbone, cfg.model.weights, run.device, vset, batch_size=cfg.eval.eval_batch_size,
                             flip=cfg.eval.eval_flip, amp=cfg.amp, workers=cfg.data.workers,
                             progress=not cfg.recording.quiet and sys.stdout.isatty())
        r["seconds"] = run.device.timestamp() - start
        data = {"val.lfw.accuracy": r["accuracy"], "val.lfw.accuracy_std": r["accuracy_std"]} if i == 0 else {}
        if len(vsets) > 1:
            data.update({"val.set": vset.name, f"val.{set_key(vset.name)}.accuracy": r["accuracy"],
                         f"val.{set_key(vset.name)}.accuracy_std": r["accuracy_std"], "val.seconds": r["seconds"]})
        rec.log((), {**data, "val.ips": r.get("images_per_second")})
        results.append(r)
    r, vset = results[0], vsets[0]
    write_roc(rec, r)
    rec.close()
    per_set = {v.name: set_figures(res, [[0, res["accuracy"], res["accuracy_std"]]]) for v, res in zip(vsets, results)}
    for fig in per_set.values():
        fig.pop("history")  # an eval run verifies once
    figures = headline_figures(r)  # as a training run's summary names them
    exact = {"lfw_accuracy_exact": figures.pop("lfw_accuracy_exact")} if "lfw_accuracy_exact" in figures else {}
    accuracy = {k: figures.pop(k) for k in ("lfw_accuracy", "lfw_accuracy_std")}
    return dict(status="completed", reason=None, eval_set=vset.name, train_set=None,
                weights=os.path.abspath(cfg.model.weights), **accuracy, best_lfw_accuracy=r["accuracy"], **figures,
                eval_ips=r.get("images_per_second"), eval_sets=list(per_set), verification=per_set,
                engine=r.get("engine"), **exact)


def check_inputs(cfg: RunConfig) -> None:
    """Read what can be read cheaply without the images: the pairs file (every line), and the
    annotation file's presence.  Raises :class:`~arcbench.errors.ArcbenchError` naming the file."""
    if cfg.data.val_pairs and (cfg.data.val_data or cfg.mode == "eval"):
        from ..verification.pairs import parse_pairs

        parse_pairs(cfg.data.val_pairs)
