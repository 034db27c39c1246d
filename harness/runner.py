"""One run from config to run directory: prepare, launch, record the outcome.

The parent process validates the config, resolves the data, creates the run
directory and writes ``config.json``/``system.json``/``summary.json``
(status ``running``) *before* any training starts, so a bad path or an
unwritable disk fails early and every later state change lands in a file
that already exists.  Workers (1 in-process, or N through torch's elastic
launcher) train; rank 0 records.  Whatever happens -- success, a bad input,
NaN, Ctrl-C, a dead worker -- the summary ends with the right status.
"""
from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
import time
from typing import Optional, Tuple

from .config import RunConfig
from .errors import ArcbenchError
from .recorder import Recorder, RunLock, create_run_dir, system_info

SYNTHETIC_FACES = "synthetic-faces"

#: locks taken by prepare() on a resumed run dir, released by execute()
_LOCKS: dict = {}


class RunFailed(Exception):
    """The run started and then failed; its summary says why (exit code 1)."""

    exit_code = 1


def resolve_data(cfg: RunConfig) -> RunConfig:
    """Fill in the embedded synthetic-faces set where no data was given."""
    changes = {}
    if cfg.mode == "train" and cfg.train_data is None:
        from .data.synth import default_dataset

        # say what the pause is: generating the set takes seconds, once
        root = str(default_dataset(log=None if cfg.quiet else (lambda m: print(m, flush=True))))
        changes.update(train_data=os.path.join(root, "train"),
                       annotation=os.path.join(root, "cls_train.txt"))
        if not (cfg.val_data or cfg.val_bin):
            changes.update(val_data=os.path.join(root, "verify"), val_pairs=os.path.join(root, "pairs.txt"))
    return cfg.replace(**changes) if changes else cfg


def is_generated(path: Optional[str]) -> bool:
    """Data made by ``arcbench data synth`` (it leaves a marker file)."""
    if not path or path == "synthetic":
        return path == "synthetic"
    root = path if os.path.isdir(path) else os.path.dirname(path)
    for candidate in (root, os.path.dirname(root)):
        if os.path.exists(os.path.join(candidate, "synth.json")):
            return True
    return False


def base_summary(cfg: RunConfig, run_dir: str, device) -> dict:
    ok = device.is_available()[0]
    synthetic = is_generated(cfg.train_data) or (cfg.mode == "eval" and is_generated(cfg.val_data))
    return {
        "run_id": os.path.basename(run_dir), "mode": cfg.mode, "status": "running", "reason": None,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device.name, "device_name": device.device_name() if ok else None,
        "backbone": cfg.backbone, "head": cfg.head, "precision": cfg.precision, "amp": cfg.amp,
        "eval_precision": cfg.eval_precision if cfg.mode == "train" else None, "lr_schedule": cfg.lr_schedule,
        "nproc": cfg.nproc, "nnodes": cfg.nnodes, "batch_size": cfg.batch_size,
        "per_process_batch": cfg.per_process_batch, "lr": cfg.effective_lr(),
        "train_set": None, "eval_set": None, "synthetic": synthetic,
    }


def prepare(cfg: RunConfig, resume: Optional[str] = None) -> Tuple[RunConfig, str, object]:
    """Validate, resolve data and create (or reopen) the run directory."""
    from . import registry

    if resume:
        if not os.path.isdir(resume):
            raise ArcbenchError("--resume: run directory not found" if not os.path.exists(resume)
                                else "--resume: expected a run directory, got a file", resume)
        cfg_path = os.path.join(resume, "config.json")
        if not os.path.exists(cfg_path):
            raise ArcbenchError("not a run directory (no config.json)", resume)
        saved = RunConfig.load(cfg_path)
        _refuse_completed(resume, saved, cfg)
        # --epochs / --max-steps may extend a finished run, --nproc changes the process count (the
        # global batch stays; a sharded head is re-sharded); nothing else changes on resume.
        # (cfg.epochs and cfg.nproc are 0 when --epochs / --nproc were not given with --resume)
        cfg = saved.replace(epochs=max(saved.epochs, cfg.epochs or 0),
                            max_steps=cfg.max_steps or saved.max_steps, quiet=cfg.quiet,
                            nproc=cfg.nproc or saved.nproc)
    cfg.validate()
    if cfg.mode == "eval" and not cfg.weights:
        raise ArcbenchError("evaluation (--do_eval True) needs --model_path/--weights")
    if cfg.mode == "eval" and not (cfg.val_data or cfg.val_bin):
        raise ArcbenchError("evaluation needs --val-data with --val-pairs, or --val-bin")
    device = registry.require_device(cfg.device)
    cfg = cfg.replace(device=device.name)
    registry.get_backbone(cfg.backbone)
    registry.get_head(cfg.head)
    cards = device.device_count()
    if cfg.nproc > max(1, cards):
        raise ArcbenchError(f"--nproc {cfg.nproc}: {cfg.nproc} processes but {cards} {device.name} "
                            f"card{'' if cards == 1 else 's'} on this node (one process per card)")
    cfg = resolve_data(cfg)
    if resume:
        from .recorder import check_writable

        run_dir = os.path.abspath(resume)
        _LOCKS[run_dir] = RunLock(run_dir).acquire()  # before anything in it is rewritten
        check_writable(run_dir)
        _remove_stale_temporaries(run_dir)
    elif cfg.node_rank == 0:
        run_dir = create_run_dir(cfg.out, cfg.run_id, backbone=cfg.backbone, device=device.name, mode=cfg.mode)
    else:
        run_dir = ""  # non-zero nodes train but do not record
    if run_dir:
        cfg = cfg.replace(run_id=os.path.basename(run_dir))
        rec = Recorder(run_dir)
        rec.write_json("config.json", cfg.to_dict())
        rec.write_json("system.json", system_info(device, cfg.world_size))
        summary = base_summary(cfg, run_dir, device)
        if resume:
            summary.update({k: v for k, v in rec.summary.items() if k in ("date", "train_set", "eval_set")})
            summary["resumed"] = int(rec.summary.get("resumed") or 0) + 1
            # the earlier segments stay on record whatever happens to this one
            summary["segments"] = past_segments(rec.summary)
            summary["wall_time"] = round(sum(seg.get("wall_time") or 0 for seg in summary["segments"]), 3)
        rec.summary = {}
        rec.update_summary(**summary)
    return cfg, run_dir, device


def _refuse_completed(run_dir: str, saved: RunConfig, asked: RunConfig) -> None:
    """A completed run is resumed only to extend it: re-running its end would rewrite its record."""
    import json

    try:
        with open(os.path.join(run_dir, "summary.json")) as fh:
            status = json.load(fh).get("status")
    except (OSError, ValueError):
        return
    extends = (asked.epochs or 0) > saved.epochs or bool(
        asked.max_steps and saved.max_steps and asked.max_steps > saved.max_steps)
    if status == "completed" and not extends:
        raise ArcbenchError(f"run already completed ({saved.epochs} epochs); add --epochs N with N > "
                            f"{saved.epochs} to extend it", run_dir)


def past_segments(summary: dict) -> list:
    """The segments recorded so far; a run recorded before segments existed counts as one."""
    if summary.get("segments"):
        return list(summary["segments"])
    if summary.get("steps") is None:
        return []
    return [{"start_step": 0, "end_step": summary.get("steps"), "wall_time": summary.get("wall_time"),
             "host": None, "ended": summary.get("status"), "reason": summary.get("reason")}]


def _close_segment(rec: Recorder, started: float) -> None:
    """Append this process start's segment; the run's wall time is the sum over segments."""
    import socket

    s = rec.summary
    segments = list(s.get("segments") or [])
    segments.append({"start_step": s.get("start_step"), "end_step": s.get("steps"),
                     "wall_time": round(time.time() - started, 3), "host": socket.gethostname(),
                     "ended": s.get("status"), "reason": s.get("reason")})
    rec.update_summary(segments=segments, wall_time=round(sum(seg.get("wall_time") or 0 for seg in segments), 3))


def _remove_stale_temporaries(run_dir: str) -> None:
    """Half-written ``.<name>.<random>.tmp`` files left by a killed run (the real files are intact)."""
    for folder in (run_dir, os.path.join(run_dir, "checkpoints")):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass


def execute(cfg: RunConfig, resume: Optional[str] = None, log=print,
            fresh_process: bool = False) -> Tuple[str, dict]:
    """Run training (or eval) end to end; returns ``(run_dir, summary)``.

    ``fresh_process``: even one process is started through the launcher (``bench --repeat``)."""
    try:
        cfg, run_dir, device = prepare(cfg, resume)
    except BaseException:
        held = _LOCKS.pop(os.path.abspath(resume), None) if resume else None
        if held is not None:
            held.release()
        raise
    lock = _LOCKS.pop(run_dir, None) if run_dir else None
    try:
        if run_dir and lock is None:
            lock = RunLock(run_dir).acquire()
        return _execute(cfg, run_dir, device, resume, log, fresh_process)
    except (KeyboardInterrupt, RunFailed) as exc:
        exc.run_dir = run_dir  # the command line prints the exact resume command
        raise
    finally:
        if lock is not None:
            lock.release()


def _execute(cfg: RunConfig, run_dir: str, device, resume: Optional[str], log,
             fresh_process: bool = False) -> Tuple[str, dict]:
    if run_dir and not cfg.quiet:
        log(f"arcbench: run directory {run_dir}")
    start = time.time()
    try:
        if cfg.mode == "eval":
            summary = evaluate_only(cfg, run_dir, device)
        elif cfg.world_size == 1 and not fresh_process:
            from .worker import worker_main

            summary = worker_main(cfg.to_dict(), run_dir, bool(resume), rank=0, local_rank=0, world_size=1)
        else:
            from .launcher import launch

            summary = launch(cfg, run_dir, bool(resume))
    finally:
        if run_dir:  # however this segment ended (completed, interrupted, failed), it is on record
            if cfg.mode == "eval":
                Recorder(run_dir).update_summary(wall_time=round(time.time() - start, 3))
            else:
                _close_segment(Recorder(run_dir), start)
    if run_dir:
        rec = Recorder(run_dir)
        summary = rec.summary
        if summary.get("status") != "completed":
            raise RunFailed(f"run {summary.get('status')}: {summary.get('reason')} ({run_dir})")
    return run_dir, summary


def install_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C so the run checkpoints and records 'interrupted'."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def evaluate_only(cfg: RunConfig, run_dir: str, device) -> dict:
    """The seed's ``--do_eval True``: verify given weights, recorded as an eval run."""
    from .checkpoint import load_backbone
    from .evaluate import evaluate
    from .worker import open_verification

    rec = Recorder(run_dir)
    device.bind(0)  # one process: the first visible card
    try:
        vset = open_verification(cfg)
        model = load_backbone(cfg.backbone, cfg.weights).to(device.torch_device())
        if cfg.channels_last:
            import torch

            model = model.to(memory_format=torch.channels_last)
        r = evaluate(model, device, vset, batch_size=cfg.eval_batch_size, flip=cfg.eval_flip, amp=cfg.amp,
                     workers=cfg.workers, progress=not cfg.quiet and sys.stdout.isatty())
    except ArcbenchError as exc:
        rec.update_summary(status="failed", reason=str(exc))
        raise
    rec.log((), {"val.lfw.accuracy": r["accuracy"], "val.lfw.accuracy_std": r["accuracy_std"],
                 "val.ips": r.get("images_per_second")})
    if r.get("roc"):
        from .plots import plot_roc

        plot_roc(r["roc"]["fpr"], r["roc"]["tpr"], rec.path("plots", "roc.png"),
                 title=f"ROC on {r.get('name')}", auc=r.get("auc"))
    rec.close()
    return rec.update_summary(
        status="completed", eval_set=vset.name, train_set=None, weights=os.path.abspath(cfg.weights),
        lfw_accuracy=r["accuracy"], lfw_accuracy_std=r["accuracy_std"], best_lfw_accuracy=r["accuracy"],
        val_at_far=r.get("val"), auc=r.get("auc"), eer=r.get("eer"), eval_pairs=r.get("pairs_used"),
        eval_pairs_skipped=r.get("pairs_skipped"), eval_ips=r.get("images_per_second"))
