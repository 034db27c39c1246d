"""What each training process runs: bind its card, open the data, train, return its outcome.

A worker never writes the run's status or summary: it returns its outcome
(status, reason, figures) to the runner, in-process for one process or
through the elastic launcher's return values for several.  When it stops
early the exception says why, carrying the figures so far where the caller
can take them (``exc.outcome``, in-process).  Rank 0 still appends
``metrics.jsonl`` and writes checkpoints, the exported backbone and plots.
"""
from __future__ import annotations

import math
import os
import traceback
from typing import Optional

import torch

from . import collectives, restarts, signals
from ..config import DataConfig, RunConfig
from ..record.recorder import Recorder

#: exit code of a launched worker stopped by a signal (128 + SIGINT), so the runner can tell
#: an interrupted run from a failed one without any traceback from the process machinery
INTERRUPTED_EXIT = 130


def _global_figures(results: dict, world_size: int) -> dict:
    """Throughput is the sum over ranks; per-rank sample counts are gathered (every rank calls this)."""
    keys = ("throughput_median", "throughput_mean", "compute_ips")
    card = results.pop("card", None)
    nan = float("nan")  # a rank with no timed step (all warm-up) has no figure; the sum then has none
    t = torch.tensor([nan if results.get(k) is None else float(results[k]) for k in keys]
                     + [float(-1 if card is None else card), float(results.get("samples", 0)),
                        float(results.get("bad_images") or 0)], dtype=torch.float64)
    rows = torch.stack(collectives.all_gather("run.figures", t))
    for i, k in enumerate(keys):
        total = float(rows[:, i].sum())
        results[k] = None if math.isnan(total) else total
    cards, samples, bad = (rows[:, len(keys) + i] for i in range(3))
    results["samples_per_rank"] = [int(v) for v in samples.tolist()]
    results["samples"] = sum(results["samples_per_rank"])  # the whole run: steps x global batch
    results["throughput_per_rank"] = [None if math.isnan(v) else float(v) for v in rows[:, 0].tolist()]
    results["card_per_rank"] = [None if v < 0 else int(v) for v in cards.tolist()]
    results["bad_images"] = int(bad.sum())  # each rank meets its own shard's bad images
    return results


def worker_main(cfg_dict: dict, run_dir: str, resume: bool, rank: Optional[int] = None,
                local_rank: Optional[int] = None, world_size: Optional[int] = None) -> dict:
    """Entry point of one process (in-process for 1 process, else under elastic_launch)."""
    cfg = RunConfig.from_dict(cfg_dict)
    launched = rank is None  # a process of its own, started by the elastic launcher
    if launched and not os.environ.get("ARCBENCH_DEBUG"):
        import warnings

        from ..errors import one_line_warning

        warnings.formatwarning = one_line_warning  # a launched worker: its own process, one-line warnings
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if local_rank is None else local_rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    resume = resume or restarts.attempt() > 0  # the elastic agent restarted the workers: resume the run
    process = _Process(cfg, run_dir, rank, world_size)
    try:
        with signals.stop_on_signals(process.stop):
            return process.run(local_rank, resume)
    except KeyboardInterrupt:
        if launched:
            raise SystemExit(INTERRUPTED_EXIT) from None  # no traceback from the process machinery
        raise
    finally:
        if launched:
            signals.default_signals()
        process.close()


class _Process:
    """One training process's life: set up, train, and say how it ended."""

    def __init__(self, cfg: RunConfig, run_dir: str, rank: int, world_size: int):
        self.cfg, self.run_dir, self.rank, self.world_size = cfg, run_dir, rank, world_size
        self.rec = Recorder(run_dir, enabled=cfg.recording.enabled) if rank == 0 and run_dir else None
        self.stop = signals.StopRequest()
        self.trainer = None
        self.ready = False  # from here on an interrupt may checkpoint: the state is this run's own
        self.data_info: dict = {}

    def run(self, local_rank: int, resume: bool) -> dict:
        try:
            self._set_up(local_rank)
            self._start(resume)
            if self.rank == 0:
                restarts.note_restart(self.run_dir, self.trainer.progress.global_step)
            self.ready = True
            results = self.trainer.run()
            results = _global_figures({**results, "card": self.device.index}, self.world_size)
            # every rank's bad images, for rank 0's bad_images.txt (JSON over the group: nothing unpickled)
            seen = collectives.all_gather_json("run.bad_images", list(getattr(self.data, "bad_seen", None) or ()))
            self.bad_seen = list(dict.fromkeys(line for share in seen for line in share))
            if self.rec:
                from ..record.plots import write_plots

                tr = self.trainer
                tr.checkpointer.export_backbone()
                write_plots(self.rec, {**tr.metrics.history, **tr.verified.history}, tr.verified.last)
                self.rec.log((), {k: v for k, v in results.items() if isinstance(v, (int, float)) and v is not None})
            return {"status": "completed", "reason": None, **self.data_info, **results}
        except KeyboardInterrupt as exc:
            # never overwrite a good checkpoint with a half-built or mid-step state; rank 0 writes the
            # checkpoint, the other ranks their own RNG streams beside it
            if self.trainer is not None and self.ready and not self.stop.hard:
                from ..train.checkpointer import SaveReason

                self.trainer.checkpointer.save(SaveReason.INTERRUPT)
            exc.outcome = self._partial()
            raise
        except BaseException as exc:
            if not isinstance(exc, (SystemExit, GeneratorExit)):
                restarts.note_failure(self.run_dir, self.rank, exc)  # under an elastic agent only
            if self.rec and not isinstance(exc, (SystemExit, GeneratorExit)):
                from ..errors import ArcbenchError

                if not isinstance(exc, ArcbenchError):
                    with open(self.rec.path("error.log"), "a") as fh:
                        traceback.print_exc(file=fh)
            exc.outcome = self._partial()
            raise

    def _set_up(self, local_rank: int) -> None:
        from .. import registry
        from .run_data import open_train_data, open_verification_sets
        from ..record.stats import reset_host_peak

        cfg = self.cfg
        self.device = registry.require_device(cfg.device)
        self.device.bind(local_rank)  # from here on, everything this process places goes to its card
        self.device.configure(deterministic=cfg.optim.deterministic)  # cuDNN autotuning, deterministic algorithms
        self.device.reset_peak_memory()  # a fresh peak per run (bench runs several in one process)
        reset_host_peak()
        collectives.setup(self.device, self.rank, self.world_size, timeout=cfg.dist.dist_timeout,
                          wait=cfg.dist.collective_wait)
        self.device.seed(cfg.schedule.seed + self.rank)
        spec = registry.get_backbone(cfg.model.backbone)
        self.data = open_train_data(cfg, self.device, self.rank, self.world_size, input_size=spec.input_size)
        # every rank embeds its share of each verification set; the headline set comes first
        self.vsets = open_verification_sets(cfg.data)
        self.data_info = _data_info(cfg.data, self.data, self.vsets[0] if self.vsets else None)
        if len(self.vsets) > 1:
            self.data_info["eval_sets"] = [v.name for v in self.vsets]

    def _start(self, resume: bool) -> None:
        from ..train import checkpoints
        from ..train.trainer import Trainer

        cfg = self.cfg
        self.trainer = Trainer(cfg, self.device, self.data, self.vsets, self.rec, rank=self.rank,
                               world_size=self.world_size, log=say, stop=self.stop, run_dir=self.run_dir or None)
        last = checkpoints.latest(self.run_dir) if (resume and self.run_dir) else None
        if last:
            _restore(self.trainer, last)
            if self.rank == 0 and not cfg.recording.quiet:
                say(f"arcbench: resumed from {last} at epoch {self.trainer.progress.epoch + 1}, "
                    f"step {self.trainer.progress.global_step}")
        elif cfg.model.weights:
            from ..inference.weights import load_backbone_weights

            load_backbone_weights(checkpoints.unwrap(self.trainer.face).backbone, cfg.model.weights)  # fine-tune from

    def _partial(self) -> dict:
        """The figures so far, for a run that stopped early."""
        out = dict(self.data_info)
        if self.trainer is not None:
            try:
                r = self.trainer.results()
                out.update({k: r.get(k) for k in ("start_step", "steps", "epochs", "final_loss",
                                                  "throughput_median", "bad_images")})
            except Exception:
                pass
        return out

    def close(self) -> None:
        # after a completed run every rank's (gathered); after an early stop this rank's share
        seen = getattr(self, "bad_seen", None) or getattr(getattr(self, "data", None), "bad_seen", None)
        if self.rank == 0 and self.run_dir and seen:
            from ..record.recorder import write_bad_images

            write_bad_images(self.run_dir, list(seen))
        if self.rec:
            self.rec.close()
        collectives.teardown()


def _data_info(given: DataConfig, data, vset) -> dict:
    """What the run reads, as its summary records it: ``given`` as configured, ``data`` as opened."""
    from ..verification.sets import generated_set_name

    generated = generated_set_name(given.train_data)  # the name the run recorded from its start
    return {"train_set": generated or data.name, "eval_set": getattr(vset, "name", None),
            "synthetic": bool(getattr(data, "synthetic", False)),
            "workers": getattr(data, "workers", None),  # the loader's decode workers per rank
            "decode": given.decode}  # "device": nvJPEG pixels, not the reference's


def say(message: str) -> None:
    """Print a progress line; a closed stdout (``arcbench run | head``) must not kill the run."""
    try:
        print(message, flush=True)
    except (BrokenPipeError, ValueError, OSError):
        pass


def _restore(trainer, path: str) -> None:
    """Load a training checkpoint; one that does not fit this run is a one-line error."""
    from ..errors import ArcbenchError

    try:
        trainer.restore(path)
    except ArcbenchError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ArcbenchError(f"checkpoint does not fit this run ({type(exc).__name__}: {first})", path) from None
