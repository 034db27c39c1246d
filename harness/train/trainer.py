"""The training loop and its step: one process's part of a run (DDP-ready).

What it trains with comes from :func:`arcbench.train.model.build_training`.  Its
parts own their state: :class:`~arcbench.train.progress.Progress` (where the run
is), :class:`~arcbench.train.step_metrics.StepMetrics` (the hot loop's loss and
step-time log), :class:`~arcbench.verification.epoch.VerificationRecord` (what
verification found; :class:`~arcbench.verification.epoch.EpochVerifier` does the
verifying) and :class:`~arcbench.train.checkpointer.Checkpointer` (saves and
restores them); records go to rank 0's :class:`arcbench.record.train_log.TrainLog`.

Hot-loop rules: no host sync per step.  Losses collect in a device buffer and
the step timer (:mod:`arcbench.steptimer`: device events where the runtime has
them) is read at the flush, once per ``log_interval``; a step's time runs from
the previous step's end to its own, so host work between steps counts;
warm-up steps are excluded from the throughput figures, and the card's wait for
data is measured apart from compute.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

import torch

from . import checkpoints
from .. import head as head_contract
from .checkpointer import Checkpointer, SaveReason
from .model import amp_dtype, build_training, uses_cuda_graphs
from .progress import Progress
from .step_metrics import NonFiniteLoss, StepMetrics  # noqa: F401  (NonFiniteLoss: raised by the loop)
from ..config import RunConfig
from ..data.device_feed import DeviceFeed
from ..errors import ArcbenchError
from ..record.stats import peak_memory
from ..record.recorder import Recorder
from ..record.train_log import TrainLog
from ..run.signals import StopRequest
from ..verification.epoch import EpochVerifier, VerificationRecord


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def eta_message(what: str, elapsed: float, steps_run: int, global_step: int, total_steps: int,
                median_step: Optional[float]) -> str:
    """Where the run is, with an ETA: per step the median timed step once warm-up is over (as the
    throughput figures take it), until then the elapsed time per step run (start-up included)."""
    per_step = median_step if median_step is not None else elapsed / steps_run
    left = max(0, total_steps - global_step) * per_step
    return (f"arcbench: {what} at step {global_step}/{total_steps}, {_duration(elapsed)} in; "
            f"about {_duration(left)} to go")


class Trainer:
    """One process's training: the epochs and the step, run by parts that own their state."""

    def __init__(self, cfg: RunConfig, device, train_data, vset=None, recorder: Optional[Recorder] = None,
                 rank: int = 0, world_size: int = 1, log=print, stop: Optional[StopRequest] = None,
                 run_dir: Optional[str] = None):
        self.cfg, self.device, self.data = cfg, device, train_data
        self.rank, self.world_size, self.log = rank, world_size, log
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
        #: set by the signal handler: the loop stops cleanly at the next step boundary
        self.stop = stop if stop is not None else StopRequest()
        self.timer = device.step_timer()
        self._make_parts(built, vset, recorder, run_dir)
        self.resume_rng = None  # restored RNG streams, applied after the resumed epoch's data skip
        self._started = time.perf_counter()  # for the ETA lines; run() restarts it

    def _make_parts(self, built, vset, recorder, run_dir) -> None:
        """The parts that own the run's state; the checkpointer saves the others through their state dicts."""
        cfg = self.cfg
        self.progress = Progress()
        self.metrics = StepMetrics(self.timer, cfg.recording.log_interval, cfg.recording.timing_warmup, sink=self.sink)
        self.verified = VerificationRecord()  # rank 0's figures
        vsets = [vset] if vset is not None and not isinstance(vset, (list, tuple)) else list(vset or [])
        #: one set or several (the headline set first); None: the run does not verify
        self.verifier = EpochVerifier(vsets, cfg, self.device, self.world_size, self.is_main) if vsets else None
        self.checkpointer = Checkpointer(
            built, {"progress": self.progress, "metrics": self.metrics, "verification": self.verified},
            self.device, recorder=recorder, rank=self.rank, world_size=self.world_size, run_dir=run_dir,
            head=cfg.model.head, log=self.log, quiet=cfg.recording.quiet)

    def restore(self, path: str) -> None:
        """Continue from a training checkpoint (its RNG streams are set again after the data skip)."""
        self.resume_rng = self.checkpointer.restore(path)

    # -------------------------------------------------------------- loop
    def run(self) -> dict:
        cfg, progress = self.cfg, self.progress
        self._started = time.perf_counter()
        progress.begin_segment()
        while progress.epoch < cfg.schedule.epochs and progress.global_step < self.total_steps:
            if not self.train_epoch():
                break  # --max-steps ended the run inside an epoch
            if self.verifier and self.verifier.due(progress.epoch, progress.global_step, self.total_steps):
                self._verify()
            if cfg.recording.checkpoint_every and progress.epoch % cfg.recording.checkpoint_every == 0:
                self.checkpointer.save(SaveReason.EPOCH_END)
        if self.verifier and not self.verifier.done:
            self._verify()  # once at the end of a run that never verified
        return self.results()

    def train_epoch(self) -> bool:
        """The rest of the current epoch; False when the run's last step fell inside it."""
        progress = self.progress
        self.data.set_epoch(progress.epoch)
        self.face.train()
        steps = progress.steps_in_epoch(self.steps_per_epoch, self.total_steps)
        it = self._batches()
        if progress.step_in_epoch == 0:
            self.metrics.start_epoch()
        bar = self._progress(steps)
        self.stop.in_steps = True
        try:
            self._steps(it, steps, bar)
        finally:
            self.stop.in_steps = False
            if bar is not None:
                bar.close()
        if progress.step_in_epoch == 0:
            raise ArcbenchError(f"epoch {progress.epoch + 1} produced no usable batch "
                                f"({getattr(self.data, 'bad_images', 0)} bad images so far)", self.cfg.data.train_data)
        if steps <= progress.step_in_epoch < self.steps_per_epoch:
            return False  # a resume that extends the run goes on inside this epoch
        # a loader that ran dry early (bad batches dropped) still ends the epoch
        self._end_epoch()
        return True

    def _batches(self):
        """This epoch's batches from the loader's position, on the card and normalised."""
        it = iter(self.data)
        for _ in range(self.progress.step_in_epoch):  # resumed inside an epoch: the order is deterministic
            next(it, None)
        if self.resume_rng is not None:
            # applied after the skip, so the skipped batches' augmentation does not shift the RNG
            checkpoints.set_rng_state(self.resume_rng, self.device)
            self.resume_rng = None
        # the next batch is copied while this step runs
        return DeviceFeed(it, self.device, channels_last=self.cfg.optim.channels_last,
                          overlap=not getattr(self.data, "synthetic", False))

    def _end_epoch(self) -> None:
        loss = self.metrics.end_epoch()
        self.progress.end_epoch()
        if self.sink:
            self.sink.epoch(self.progress.epoch, loss)
        self._eta(f"epoch {self.progress.epoch}/{self.cfg.schedule.epochs} done (loss {loss:.4f})")

    def _verify(self) -> None:
        """Every rank verifies (sharded embedding); rank 0 keeps and logs what was found."""
        results = self.verifier.verify(checkpoints.unwrap(self.face).backbone)
        if not self.is_main:
            return
        epoch = self.progress.epoch
        for i, (name, result) in enumerate(results):
            self.verified.add(epoch, name, result, headline=i == 0)
            self.sink.verification(epoch, result, headline=i == 0, several=self.verifier.several)

    def _eta(self, what: str) -> None:
        """Without a progress bar (output to a file or a pipe) say where the run is, with an ETA."""
        steps_run = self.progress.steps_this_process
        if not self.is_main or self.cfg.recording.quiet or sys.stdout.isatty() or not steps_run:
            return
        self.log(eta_message(what, time.perf_counter() - self._started, steps_run, self.progress.global_step,
                             self.total_steps, self.metrics.times.median_step()))

    def _steps(self, it, steps: int, bar) -> None:
        """The hot loop over this epoch's remaining steps: no host sync outside the flush."""
        timer, metrics, progress = self.timer, self.metrics, self.progress
        metrics.open()  # the timed window's one sync
        while progress.step_in_epoch < steps:
            timer.fetch_start()
            try:
                images, labels = next(it)
            except StopIteration:
                break
            timer.fetch_end()  # the feed has queued this step's wait for its copy (and the next copy)
            timer.begin()  # the card's wait for this batch ends here; its compute starts
            loss = self.train_step(images, labels)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            timer.end()
            self._count_step(bar)
            metrics.record({"loss": loss}, images.shape[0], step=progress.global_step - 1, lr=lr,
                           n=progress.steps_this_process)
            checkpoint_due = self._checkpoint_step_due()
            if metrics.full or progress.step_in_epoch >= steps or checkpoint_due or self.stop:
                # a checkpoint or a stop also flushes: every step before it is logged and in the epoch loss
                self._flush(bar)
            if checkpoint_due:
                self.checkpointer.save(SaveReason.STEP_INTERVAL)
            if self.stop:
                raise KeyboardInterrupt(self.stop.reason)
        if metrics.pending:
            self._flush(bar)

    def _flush(self, bar) -> None:
        """The interval's one host sync (:meth:`StepMetrics.flush`)."""
        self.metrics.flush(bar)

    def _checkpoint_step_due(self) -> bool:
        every = self.cfg.recording.checkpoint_steps
        return bool(every) and self.progress.global_step % every == 0

    def _count_step(self, bar) -> None:
        self.progress.step()
        if self.progress.steps_this_process == 1:
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

    def _progress(self, steps):
        """The epoch's progress bar on a terminal (rank 0), else None."""
        if not self.is_main or self.cfg.recording.quiet or not sys.stdout.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=steps, initial=self.progress.step_in_epoch,
                    desc=f"epoch {self.progress.epoch + 1}/{self.cfg.schedule.epochs}", unit="step", dynamic_ncols=True,
                    leave=False)

    # ----------------------------------------------------------- results
    def results(self) -> dict:
        """This rank's figures; throughput is summed over ranks by the caller."""
        progress, metrics = self.progress, self.metrics
        out = metrics.times.figures(self.cfg.per_process_batch)
        out["step_timer"] = self.timer.kind  # how the step figures are measured
        out.update(peak_memory(self.device))
        out.update(samples=metrics.samples, start_step=progress.start_step, steps=progress.global_step,
                   epochs=progress.epoch, final_loss=metrics.last_loss,
                   bad_images=int(getattr(self.data, "bad_images", 0) or 0),
                   best_lfw_accuracy=self.verified.best_accuracy)
        out.update(self._head_figures())
        out.update(self.verified.figures())
        return out

    def _head_figures(self) -> dict:
        """The head's size on this rank (rank 0 holds the largest shard): what the class count costs."""
        head = self.face.head
        return {"num_classes": int(self.data.num_classes), "sample_rate": float(getattr(head, "sample_rate", 1.0)),
                "head_memory": head_contract.state_bytes(head, self.optimizer),
                "head_params_per_rank": int(sum(p.numel() for p in head.parameters()))}
