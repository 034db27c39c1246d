"""The training loop and its step: one process's part of a run (DDP-ready).

What it trains with comes from :func:`arcbench.train.model.build_training`; its
state is saved and restored by :mod:`arcbench.train.checkpoints`; its records go
to rank 0's :class:`arcbench.record.train_log.TrainLog`; verification is an epoch
callback (:mod:`arcbench.verification.epoch`).

Hot-loop rules: no host sync per step.  Losses collect in a device buffer and
the step timer (:mod:`arcbench.steptimer`: device events where the runtime has
them) is read at the flush, once per ``log_interval``; a step's time runs from
the previous step's end to its own, so host work between steps counts;
warm-up steps are excluded from the throughput figures, and the card's wait for
data is measured apart from compute.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Optional

import torch

from . import checkpoints
from .. import head as head_contract
from .model import amp_dtype, build_training, uses_cuda_graphs
from ..config import RunConfig
from ..data.device_feed import DeviceFeed
from ..errors import ArcbenchError
from ..record.stats import peak_memory
from ..record.recorder import Recorder
from ..record.train_log import TrainLog
from ..run.signals import StopRequest
from ..record.stats import step_stats


class NonFiniteLoss(ArcbenchError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""

    exit_code = 1  # the run failed; not a usage error


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class Trainer:
    """One process's training: the epochs, the step, and the position and figures so far."""

    def __init__(self, cfg: RunConfig, device, train_data, vset=None, recorder: Optional[Recorder] = None,
                 rank: int = 0, world_size: int = 1, log=print, stop: Optional[StopRequest] = None,
                 run_dir: Optional[str] = None):
        self.cfg, self.device, self.data = cfg, device, train_data
        self.rec, self.rank, self.world_size, self.log = recorder, rank, world_size, log
        self.is_main = rank == 0
        self.tdev = device.torch_device()  # the card this process was bound to
        built = build_training(cfg, device, train_data.num_classes, len(train_data), world_size)
        self.face, self.model, self.optimizer = built.face, built.model, built.optimizer
        self.scheduler, self.scaler = built.scheduler, built.scaler
        self.amp_dtype = amp_dtype(cfg)  # None: the device plugin's own
        # CUDA graphs (reduce-overhead, max-autotune) reuse output memory: each step is marked new
        self.cuda_graphs = uses_cuda_graphs(cfg) and hasattr(getattr(torch, "compiler", None),
                                                            "cudagraph_mark_step_begin")
        self.steps_per_epoch, self.total_steps = built.steps_per_epoch, built.total_steps
        self.sink = TrainLog(recorder, steps_per_epoch=self.steps_per_epoch, world_size=world_size,
                             per_process_batch=cfg.per_process_batch, say=log, quiet=cfg.recording.quiet) \
            if self.is_main else None
        self.callbacks = []
        vsets = [vset] if vset is not None and not isinstance(vset, (list, tuple)) else list(vset or [])
        if vsets:  # one set or several (the headline set first)
            from ..verification.epoch import EpochVerification

            self.callbacks.append(EpochVerification(vsets, cfg))
        #: set by the signal handler: the loop stops cleanly at the next step boundary
        self.stop = stop if stop is not None else StopRequest()
        #: the run directory, where ranks other than 0 keep their own RNG streams (None: not recorded)
        self.run_dir = run_dir
        # position and figures: what a checkpoint saves and restores
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best_accuracy = None
        self.history = {"loss": [], "epoch_accuracy": [], "epoch_loss": []}
        self.last_eval = None  # rank 0's last verification result (the headline set)
        self.last_evals = {}  # rank 0's last verification result per set name, in the order verified
        #: per timed step: the card's wait before the step, the rest of the step (together the step's
        #: time, end mark to end mark) and the host's time blocked on the loader (arcbench.steptimer)
        self.data_times, self.compute_times, self.host_wait_times = [], [], []
        self.timer = device.step_timer()
        self.samples = 0
        self.epoch_loss = [0.0, 0]  # sum and count of the losses read this epoch
        self.resume_rng = None  # restored RNG streams, applied after the resumed epoch's data skip
        #: steps run by this process: warm-up is excluded per process start (a resume is cold again)
        self.steps_this_process = 0
        self.start_step = 0
        self._started = time.perf_counter()  # for the ETA lines; run() restarts it

    # ------------------------------------------------------------- state
    def restore(self, path: str) -> None:
        checkpoints.restore(self, path)

    def save_checkpoint(self, tag: Optional[str] = None) -> None:
        checkpoints.save_checkpoint(self, tag)

    def export_backbone(self) -> Optional[str]:
        return checkpoints.export_backbone(self)

    # -------------------------------------------------------------- loop
    def run(self) -> dict:
        cfg = self.cfg
        self._started = time.perf_counter()
        self.start_step = self.global_step  # where this segment starts (after a restore)
        while self.epoch < cfg.schedule.epochs and self.global_step < self.total_steps:
            if not self.train_epoch():
                break  # --max-steps ended the run inside an epoch
            for callback in self.callbacks:
                callback.on_epoch_end(self)
            if cfg.recording.checkpoint_every and self.epoch % cfg.recording.checkpoint_every == 0:
                self.save_checkpoint(tag=f"epoch{self.epoch:03d}")
        for callback in self.callbacks:
            callback.on_train_end(self)
        return self.results()

    def train_epoch(self) -> bool:
        """The rest of the current epoch; False when the run's last step fell inside it."""
        self.data.set_epoch(self.epoch)
        self.face.train()
        steps = min(self.steps_per_epoch, self.total_steps - self.global_step + self.step_in_epoch)
        it = iter(self.data)
        for _ in range(self.step_in_epoch):  # resumed inside an epoch: the sampler order is deterministic
            next(it, None)
        if self.resume_rng is not None:
            # applied after the skip, so the skipped batches' augmentation does not shift the RNG
            checkpoints.set_rng_state(self.resume_rng, self.device)
            self.resume_rng = None
        # batches arrive on the card, normalised; the next one is copied while this step runs
        it = DeviceFeed(it, self.device, channels_last=self.cfg.optim.channels_last,
                        overlap=not getattr(self.data, "synthetic", False))
        if self.step_in_epoch == 0:
            self.epoch_loss = [0.0, 0]
        bar = self._progress(steps)
        self.stop.in_steps = True
        try:
            self._steps(it, steps, bar)
        finally:
            self.stop.in_steps = False
            if bar is not None:
                bar.close()
        if self.step_in_epoch == 0:
            raise ArcbenchError(f"epoch {self.epoch + 1} produced no usable batch "
                                f"({getattr(self.data, 'bad_images', 0)} bad images so far)", self.cfg.data.train_data)
        if steps <= self.step_in_epoch < self.steps_per_epoch:
            return False  # a resume that extends the run goes on inside this epoch
        # a loader that ran dry early (bad batches dropped) still ends the epoch
        self._end_epoch(self.epoch_loss[0] / max(1, self.epoch_loss[1]))
        return True

    def _end_epoch(self, loss: float) -> None:
        self.history["epoch_loss"].append(loss)
        self.epoch += 1
        self.step_in_epoch = 0
        if self.sink:
            self.sink.epoch(self.epoch, loss)
        self._eta(f"epoch {self.epoch}/{self.cfg.schedule.epochs} done (loss {loss:.4f})")

    def _eta(self, what: str) -> None:
        """Without a progress bar (output to a file or a pipe) say where the run is, with an ETA."""
        if not self.is_main or self.cfg.recording.quiet or sys.stdout.isatty() or not self.steps_this_process:
            return
        elapsed = time.perf_counter() - self._started
        per_step = elapsed / self.steps_this_process  # until warm-up is over: start-up included
        if self.compute_times:  # after warm-up: the median step, as the throughput figures take it
            import statistics

            per_step = statistics.median(d + c for d, c in zip(self.data_times, self.compute_times))
        left = max(0, self.total_steps - self.global_step) * per_step
        self.log(f"arcbench: {what} at step {self.global_step}/{self.total_steps}, {_duration(elapsed)} in; "
                 f"about {_duration(left)} to go")

    def _steps(self, it, steps: int, bar) -> None:
        """The hot loop over this epoch's remaining steps: no host sync outside the flush."""
        cfg = self.cfg
        buf = torch.zeros(max(1, cfg.recording.log_interval), device=self.tdev)
        pending = []  # (global_step, lr, steps_this_process) since the last flush
        timer = self.timer
        timer.open()  # the timed window's one sync
        while self.step_in_epoch < steps:
            timer.fetch_start()
            try:
                images, labels = next(it)
            except StopIteration:
                break
            timer.fetch_end()  # the feed has queued this step's wait for its copy (and the next copy)
            timer.begin()  # the card's wait for this batch ends here; its compute starts
            buf[len(pending)] = self.train_step(images, labels)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            timer.end()
            self._count_step(images.shape[0], bar)
            pending.append((self.global_step - 1, lr, self.steps_this_process))
            checkpoint_due = bool(cfg.recording.checkpoint_steps) and self.global_step % cfg.recording.checkpoint_steps == 0
            if len(pending) == buf.numel() or self.step_in_epoch >= steps or checkpoint_due or self.stop:
                # a checkpoint or a stop also flushes: every step before it is logged and in the epoch loss
                self._flush(buf, pending, bar)
                pending = []
            if checkpoint_due:
                self.save_checkpoint()
            if self.stop:
                raise KeyboardInterrupt(self.stop.reason)
        if pending:
            self._flush(buf, pending, bar)

    def _count_step(self, images: int, bar) -> None:
        self.global_step += 1
        self.step_in_epoch += 1
        self.steps_this_process += 1
        self.samples += images
        if self.steps_this_process == 1:
            self._eta("first step done")
        if bar is not None:
            bar.update(1)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimisation step (forward, loss, backward, optimizer, scaler) on a batch already
        on the device; returns the detached loss without a host sync.  The lr schedule, timing
        and logging stay in the loop; benchmarks time exactly this body."""
        cfg = self.cfg
        if self.cuda_graphs:  # a new step: the graphs may reuse the last step's output memory
            torch.compiler.cudagraph_mark_step_begin()
        with self.device.autocast(cfg.amp, self.amp_dtype):
            loss = self.model(images, labels)  # model and fp32 loss (build.WithLoss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            # the norm over the whole model (a sharded head sums its shards' squares over the ranks)
            head_contract.clip_grad_norm_(self.face, self.face.head, cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _flush(self, buf, pending, bar) -> None:
        """One host sync per interval: read the step timer and the buffered losses, guard, count, log."""
        times = self.timer.read()  # waits for the interval's last step: the flush's one sync
        values = buf[:len(pending)].tolist()
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            step = pending[bad[0]][0] + 1
            raise NonFiniteLoss(f"loss became {values[bad[0]]} at step {step}; stopped, last good checkpoint kept")
        for (_, _, n), (data, compute, host) in zip(pending, times):
            if n > self.cfg.recording.timing_warmup:  # warm-up steps are excluded from the figures
                self.data_times.append(data)
                self.compute_times.append(compute)
                self.host_wait_times.append(host)
        self.epoch_loss = [self.epoch_loss[0] + sum(values), self.epoch_loss[1] + len(values)]
        if self.is_main:
            self.history["loss"].extend([[p[0] + 1, v] for p, v in zip(pending, values)])
            self.sink.steps([(p[0], p[1], t[0], t[1]) for p, t in zip(pending, times)], values, bar)

    def _progress(self, steps):
        if not self.is_main or self.cfg.recording.quiet or not sys.stdout.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=steps, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{self.cfg.schedule.epochs}",
                    unit="step", dynamic_ncols=True, leave=False)

    # ----------------------------------------------------------- results
    def results(self) -> dict:
        """This rank's figures; throughput is summed over ranks by the caller."""
        out = step_stats(self.data_times, self.compute_times, self.cfg.per_process_batch, self.host_wait_times)
        out["step_timer"] = self.timer.kind  # how the step figures are measured
        out.update(peak_memory(self.device))
        out.update(samples=self.samples, start_step=self.start_step, steps=self.global_step, epochs=self.epoch,
                   final_loss=self.history["loss"][-1][1] if self.history["loss"] else None,
                   bad_images=int(getattr(self.data, "bad_images", 0) or 0), best_lfw_accuracy=self.best_accuracy)
        out.update(self._head_figures())
        if self.last_eval is not None:
            r = self.last_eval
            out.update(lfw_accuracy=float(r["accuracy"]), lfw_accuracy_std=float(r["accuracy_std"]),
                       val_at_far=r.get("val"), auc=r.get("auc"), eer=r.get("eer"),
                       eval_pairs=r.get("pairs_used"), eval_pairs_skipped=r.get("pairs_skipped"))
            if r.get("grid_unresolved"):  # the grid read chance; what exact thresholds read
                out["lfw_accuracy_exact"] = r["accuracy_exact"]
        if self.last_evals:
            from ..verification.epoch import set_figures

            out["eval_sets"] = list(self.last_evals)
            out["verification"] = {name: set_figures(r, self.history.get("sets", {}).get(name, []))
                                   for name, r in self.last_evals.items()}
        return out

    def _head_figures(self) -> dict:
        """The head's size on this rank (rank 0 holds the largest shard): what the class count costs."""
        head = self.face.head
        return {"num_classes": int(self.data.num_classes), "sample_rate": float(getattr(head, "sample_rate", 1.0)),
                "head_memory": head_contract.state_bytes(head, self.optimizer),
                "head_params_per_rank": int(sum(p.numel() for p in head.parameters()))}
