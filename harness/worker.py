"""What each training process runs: data, trainer, and rank 0's recording."""
from __future__ import annotations

import math
import os
import traceback
from typing import Optional

import torch

from .config import RunConfig
from .errors import ArcbenchError
from .recorder import Recorder


def open_train_data(cfg: RunConfig, device, rank: int, world_size: int):
    """This rank's training batches; synthetic ones are made on the process's bound card."""
    from .data.train_sets import SyntheticBatches, make_loader, open_train_set

    if cfg.train_data == "synthetic":
        return SyntheticBatches(cfg.per_process_batch, num_classes=cfg.synthetic_classes,
                                steps_per_epoch=cfg.synthetic_steps, device=device.torch_device(),
                                seed=cfg.seed + rank)
    dataset = open_train_set(cfg.train_data, annotation=cfg.annotation, on_bad_image=cfg.on_bad_image)
    return make_loader(dataset, batch_size=cfg.per_process_batch, rank=rank, world_size=world_size,
                       seed=cfg.seed, workers=cfg.workers, pin_memory=device.torch_type != "cpu",
                       on_bad_image=cfg.on_bad_image)


def open_verification(cfg: RunConfig):
    if not (cfg.val_data or cfg.val_bin):
        return None
    from .runner import SYNTHETIC_FACES, is_generated
    from .verification import load_verification

    name = f"{SYNTHETIC_FACES} (held-out identities)" if is_generated(cfg.val_data) else None
    return load_verification(val_data=cfg.val_data, val_pairs=cfg.val_pairs, val_bin=cfg.val_bin, name=name)


def _global_figures(results: dict, world_size: int) -> dict:
    """Throughput is the sum over ranks; per-rank sample counts are gathered (every rank calls this)."""
    from . import collectives

    keys = ("throughput_median", "throughput_mean", "compute_ips")
    card = results.pop("card", None)
    nan = float("nan")  # a rank with no timed step (all warm-up) has no figure; the sum then has none
    t = torch.tensor([nan if results.get(k) is None else float(results[k]) for k in keys]
                     + [float(-1 if card is None else card), float(results.get("samples", 0))], dtype=torch.float64)
    rows = torch.stack(collectives.all_gather("run.figures", t))
    for i, k in enumerate(keys):
        total = float(rows[:, i].sum())
        results[k] = None if math.isnan(total) else total
    results["samples_per_rank"] = [int(v) for v in rows[:, -1].tolist()]
    results["samples"] = sum(results["samples_per_rank"])  # the whole run: steps x global batch
    results["throughput_per_rank"] = [None if math.isnan(v) else float(v) for v in rows[:, 0].tolist()]
    results["card_per_rank"] = [None if v < 0 else int(v) for v in rows[:, -2].tolist()]
    return results


def worker_main(cfg_dict: dict, run_dir: str, resume: bool, rank: Optional[int] = None,
                local_rank: Optional[int] = None, world_size: Optional[int] = None) -> dict:
    """Entry point of one process (in-process for 1 process, else under elastic_launch)."""
    from . import registry
    from .runner import install_sigterm

    cfg = RunConfig.from_dict(cfg_dict)
    launched = rank is None  # a process of its own, started by the elastic launcher
    if launched and not os.environ.get("ARCBENCH_DEBUG"):
        import warnings

        from .errors import one_line_warning

        warnings.formatwarning = one_line_warning  # a launched worker: its own process, one-line warnings
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if local_rank is None else local_rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    is_main = rank == 0 and bool(run_dir)
    rec = Recorder(run_dir, enabled=cfg.record) if is_main else None
    device = registry.require_device(cfg.device)
    install_sigterm()
    trainer = None
    ready = False
    previous_handlers = {}
    try:
        device.bind(local_rank)  # from here on, everything this process places goes to its card
        device.reset_peak_memory()  # a fresh peak per run (bench runs several in one process)
        from .train import reset_host_peak

        reset_host_peak()
        from . import collectives

        collectives.setup(device, rank, world_size, timeout=cfg.dist_timeout, wait=cfg.collective_wait)
        device.seed(cfg.seed + rank)
        from .train import Trainer

        data = open_train_data(cfg, device, rank, world_size)
        vset = open_verification(cfg)  # every rank embeds its share of the verification set
        if rec:
            from .runner import SYNTHETIC_FACES, is_generated

            train_set = SYNTHETIC_FACES if is_generated(cfg.train_data) and cfg.train_data != "synthetic" else data.name
            rec.update_summary(train_set=train_set, eval_set=getattr(vset, "name", None),
                               synthetic=bool(rec.summary.get("synthetic") or getattr(data, "synthetic", False)))
        trainer = Trainer(cfg, device, data, vset, rec, rank=rank, world_size=world_size, log=_say)
        trainer.run_dir = run_dir or None  # ranks > 0 keep their own RNG streams there
        previous_handlers = _stop_on_signals(trainer)
        from . import train_state

        last = train_state.latest(run_dir) if (resume and run_dir) else None
        if last:
            _restore(trainer, last)
            if rank == 0 and not cfg.quiet:
                _say(f"arcbench: resumed from {last} at epoch {trainer.epoch + 1}, step {trainer.global_step}")
        elif cfg.weights:
            from .checkpoint import load_backbone_weights

            load_backbone_weights(train_state.unwrap(trainer.face).backbone, cfg.weights)  # fine-tune from
        ready = True  # from here on an interrupt may checkpoint: the state is this run's own
        results = trainer.run()
        results = _global_figures({**results, "card": device.index}, world_size)
        if rec:
            _record_placements(rec, results["card_per_rank"], device)
            trainer.export_backbone()
            _plots(rec, trainer)
            rec.update_summary(status="completed", reason=None, **results)
            rec.log((), {k: v for k, v in results.items() if isinstance(v, (int, float)) and v is not None})
        return rec.summary if rec else results
    except KeyboardInterrupt:
        # never overwrite a good checkpoint with a half-built or mid-step state; rank 0 writes the
        # checkpoint, the other ranks their own RNG streams beside it
        if trainer is not None and ready and not getattr(trainer, "hard_stop", False):
            trainer.save_checkpoint()
        if rec:
            rec.update_summary(status="interrupted", reason="interrupted by signal; resume with --resume",
                               **(_partial(trainer)))
        raise
    except ArcbenchError as exc:
        if rec:
            rec.update_summary(status="failed", reason=str(exc), **(_partial(trainer)))
        raise
    except Exception as exc:
        if rec:
            rec.update_summary(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500],
                               **(_partial(trainer)))
            with open(rec.path("error.log"), "a") as fh:
                traceback.print_exc(file=fh)
        raise
    finally:
        _restore_signals(previous_handlers)
        if launched:
            # done (or failed): when the agent now stops this process because another rank died,
            # its SIGTERM should end it quietly, not raise KeyboardInterrupt inside interpreter shutdown
            _default_signals()
        if rec:
            rec.close()
        from . import collectives

        collectives.teardown()


def _record_placements(rec: Recorder, cards: list, device) -> None:
    """Which card each rank ran on, in ``system.json`` (rank 0 learns them from the final gather)."""
    import json

    try:
        with open(rec.path("system.json")) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        info = {}
    info["placements"] = [{"rank": r, "device": device.name, "card": c} for r, c in enumerate(cards)]
    rec.write_json("system.json", info)


def _say(message: str) -> None:
    """Print a progress line; a closed stdout (``arcbench run | head``) must not kill the run."""
    try:
        print(message, flush=True)
    except (BrokenPipeError, ValueError, OSError):
        pass


def _restore(trainer, path: str) -> None:
    """Load a training checkpoint; one that does not fit this run is a one-line error."""
    try:
        trainer.restore(path)
    except ArcbenchError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ArcbenchError(f"checkpoint does not fit this run ({type(exc).__name__}: {first})", path) from None


def _partial(trainer) -> dict:
    if trainer is None:
        return {}
    try:
        r = trainer.results()
        return {k: r.get(k) for k in ("start_step", "steps", "epochs", "final_loss", "throughput_median",
                                      "bad_images")}
    except Exception:
        return {}


def _plots(rec: Recorder, trainer) -> None:
    from .plots import plot_lines, plot_roc

    hist = trainer.history
    if hist["loss"]:
        xs, ys = zip(*hist["loss"])
        plot_lines({"train.loss": (list(xs), list(ys))}, rec.path("plots", "loss.png"),
                   title="Training loss", xlabel="step", ylabel="loss")
    if hist["epoch_accuracy"]:
        xs = [row[0] for row in hist["epoch_accuracy"]]
        ys = [row[1] for row in hist["epoch_accuracy"]]
        plot_lines({"verification accuracy": (xs, ys)}, rec.path("plots", "accuracy.png"),
                   title="Verification accuracy (10-fold)", xlabel="epoch", ylabel="accuracy")
    ev = trainer.last_eval
    if ev and ev.get("roc"):
        plot_roc(ev["roc"]["fpr"], ev["roc"]["tpr"], rec.path("plots", "roc.png"),
                 title=f"ROC on {ev.get('name', 'verification pairs')}", auc=ev.get("auc"))


def _stop_on_signals(trainer) -> None:
    """First Ctrl-C/SIGTERM: finish the current step, checkpoint, record 'interrupted'. Second: now.

    Outside the step loop (verification, waiting for other ranks) there is no step to finish:
    the first signal stops at once, so a launcher stopping this worker is not kept waiting."""
    import signal

    def handler(signum, frame):
        if trainer.stop_requested:
            trainer.hard_stop = True  # mid-step: the state is not a step boundary, keep the last checkpoint
            raise KeyboardInterrupt(f"signal {signum}")
        trainer.stop_requested = f"signal {signum}"
        if not trainer.in_steps:
            raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (embedded use)
        pass
    return previous


def _default_signals() -> None:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (ValueError, OSError):
            pass


def _restore_signals(previous: dict) -> None:
    import signal

    for sig, old in previous.items():
        try:
            signal.signal(sig, old)
        except (ValueError, TypeError):
            pass
