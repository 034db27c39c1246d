"""The training loop: one process's part of a run (DDP-ready).

Hot-loop rules: no ``.item()`` per step (losses collect in a device buffer
that is read once per ``log_interval``), the device is synchronised once per
step so the step timer is honest, warm-up steps are excluded from the
throughput figures, and data-wait time is measured apart from compute.
"""
from __future__ import annotations

import math
import resource
import sys
import time
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import train_state
from .config import RunConfig
from .device import proc_kib
from .errors import ArcbenchError
from .recorder import Recorder
from .stats import step_stats


class NonFiniteLoss(ArcbenchError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""

    exit_code = 1  # the run failed; not a usage error


class FaceModel(nn.Module):
    """Backbone + margin head, so DDP and torch.compile see one module."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images), labels)

    @property
    def head_computes_loss(self) -> bool:
        """The head returns the loss itself (Partial FC), not logits for F.cross_entropy."""
        return bool(getattr(self.head, "computes_loss", False))

    @property
    def head_sharded(self) -> bool:
        """The head's parameters are split across the ranks (Partial FC): kept out of DDP,
        checkpointed through a world-size independent full state, clipped by the global norm."""
        return bool(getattr(self.head, "sharded", False))


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    lr = cfg.effective_lr()
    params = list(params)
    if cfg.optimizer == "sgd":
        kwargs = dict(lr=lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
        try:
            return torch.optim.SGD(params, foreach=True, **kwargs)
        except TypeError:  # very old torch
            return torch.optim.SGD(params, **kwargs)
    kwargs = dict(lr=lr, weight_decay=cfg.weight_decay)
    try:
        return torch.optim.AdamW(params, foreach=True, **kwargs)
    except TypeError:
        return torch.optim.AdamW(params, **kwargs)


def lr_factor(cfg: RunConfig, total_steps: int, steps_per_epoch: int):
    """Per-iteration multiplier of the base lr for ``cfg.lr_schedule`` (see :mod:`arcbench.schedule`)."""
    from .schedule import lr_factor as schedule_factor

    return schedule_factor(cfg, total_steps, steps_per_epoch)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def host_peak_rss() -> int:
    """Peak resident memory of this process in bytes (the CPU 'device memory') since the last
    :func:`reset_host_peak` (Linux's VmHWM), or since the process started."""
    peak = proc_kib("/proc/self/status", "VmHWM:")
    if peak is not None:
        return peak * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_host_peak() -> bool:
    """Restart the peak-RSS count from the current RSS (Linux >= 4.0), so several runs in one
    process (``arcbench bench``) each report their own peak.  False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def build_face_model(cfg: RunConfig, num_classes: int) -> FaceModel:
    """Backbone and head from the registries; s defaults to the backbone's margin scale."""
    from .registry import get_backbone, create_head

    spec = get_backbone(cfg.backbone)
    backbone = spec.create()
    s = cfg.margin_s if cfg.margin_s is not None else spec.margin_scale
    head_kwargs = {"s": s}
    if cfg.margin_m is not None:  # None: the head's own default; config refuses m for the combined head
        head_kwargs["m"] = cfg.margin_m
    if cfg.head == "partial_fc":  # sharded over the process group initialised before this is called
        head_kwargs.update(margin=cfg.margin or "arcface", sample_rate=cfg.sample_rate, seed=cfg.seed)
    head = create_head(cfg.head, spec.embedding_size, num_classes, **head_kwargs)
    return FaceModel(backbone, head)


class Trainer:
    """Builds everything for one process and runs the epochs."""

    def __init__(self, cfg: RunConfig, device, train_data, vset=None, recorder: Optional[Recorder] = None,
                 rank: int = 0, world_size: int = 1, log=print):
        self.cfg, self.device, self.data, self.vset = cfg, device, train_data, vset
        self.rec, self.rank, self.world_size, self.log = recorder, rank, world_size, log
        self.is_main = rank == 0
        self.tdev = device.torch_device()  # the card this process was bound to
        self.face = build_face_model(cfg, train_data.num_classes).to(self.tdev)
        if cfg.channels_last:
            self.face = self.face.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(cfg, self.face.parameters())
        self.steps_per_epoch = len(train_data)
        if self.steps_per_epoch == 0:
            raise ArcbenchError("the training set is smaller than one batch", cfg.train_data)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg, self.total_steps, self.steps_per_epoch))
        self.scaler = device.grad_scaler(cfg.amp)
        self.model = self.face
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            with warnings.catch_warnings():
                # torch >= 2.11 deprecates broadcast_buffers; its replacement is missing from 2.0
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*")
                if self.face.head_sharded:
                    # each rank keeps its own shard of the centres: only the backbone is data-parallel
                    ddp = DDP(self.face.backbone, device_ids=device.ddp_device_ids(), broadcast_buffers=False,
                              gradient_as_bucket_view=True)
                    self.model = FaceModel(ddp, self.face.head)  # the head stays outside DDP
                else:
                    self.model = DDP(self.face, device_ids=device.ddp_device_ids(), broadcast_buffers=False,
                                     gradient_as_bucket_view=True)
        if cfg.compile:
            self.model = torch.compile(self.model, backend=device.compile_backend)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_accuracy = None
        self.history = {"loss": [], "epoch_accuracy": [], "epoch_loss": []}
        self.last_eval = None  # rank 0's last verification result
        self.verified = False  # set on every rank, so every rank takes the same branches
        self.data_times, self.compute_times = [], []
        self.samples = 0
        #: steps run by this process: warm-up is excluded per process start (a resume is cold again)
        self.steps_this_process = 0
        self._started = time.perf_counter()  # for the ETA lines; run() restarts it
        #: set by a signal handler; the loop stops cleanly at the next step boundary
        self.stop_requested = ""
        #: True inside the step loop, where a first signal waits for the step boundary
        self.in_steps = False
        self._resume_rng = None
        self.epoch_loss = [0.0, 0]
        #: the run directory, where ranks other than 0 keep their own RNG streams (None: not recorded)
        self.run_dir: Optional[str] = None

    # ---------------------------------------------------------------- resume
    def restore(self, path: str) -> None:
        # straight onto this process's card (torch.load knows no host index: "cpu" for the host)
        state = train_state.load(path, map_location=self.tdev if self.tdev.type != "cpu" else "cpu")
        face = train_state.unwrap(self.face)
        face.backbone.load_state_dict(state["backbone"])
        head_full = state.get("head_full")
        if face.head_sharded != (head_full is not None):
            raise ArcbenchError(f"the checkpoint's head ({'sharded' if head_full is not None else 'not sharded'}) "
                                f"does not match --head {self.cfg.head}", path)
        if head_full is None:
            face.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        if head_full is not None:
            from .plugins.heads.partial_fc import load_full_state

            # after the optimizer: re-shards the centres and their per-row state (momentum)
            # for this run's world size, whatever it was when saved
            load_full_state(face.head, head_full, self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.best_accuracy = state.get("best_accuracy")
        self.history = state.get("history") or self.history
        self._resume_rng = state["rng"]
        self.epoch_loss = list(state.get("epoch_loss") or [0.0, 0])  # the epoch's running loss so far
        own = train_state.load_rank_rng(self.run_dir, self.rank, self.global_step)
        if own is not None:  # this rank's own RNG streams, not rank 0's
            self._resume_rng = state["rng"] = own
        timing = state.get("timing") or {}
        if "data" in timing:  # the timed steps of earlier segments (rank 0's; DDP ranks step in lock-step)
            self.data_times = timing["data"].tolist()
            self.compute_times = timing["compute"].tolist()
            self.samples = int(timing.get("samples", 0))
        train_state.set_rng_state(state["rng"], self.device)

    def save_checkpoint(self, tag: Optional[str] = None) -> None:
        """Rank 0 writes.  With a sharded head every rank must call this (the full state of the
        centres is gathered to rank 0 first), at the same step."""
        head_full = None
        if self.face.head_sharded:
            if self.world_size > 1 and isinstance(sys.exc_info()[1], KeyboardInterrupt):
                # called by rank 0 alone while an interrupt unwinds: gathering the centres would wait
                # for ranks that are not there, so the last periodic checkpoint stays the one to resume
                if self.is_main and not self.cfg.quiet:
                    self.log("arcbench: interrupted; the sharded head is checkpointed only at step "
                             "boundaries all processes reach (--checkpoint-steps), so the last one is kept")
                return
            from .plugins.heads.partial_fc import full_state

            head_full = full_state(self.face.head, self.optimizer)  # a collective
        if not self.is_main and self.run_dir:
            train_state.save_rank_rng(self.run_dir, self.rank, self.global_step, self.device)
        if not (self.is_main and self.rec):
            return
        kwargs = dict(face_model=self.face, head_full=head_full, optimizer=self.optimizer, scheduler=self.scheduler,
                      scaler=self.scaler, epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                      global_step=self.global_step, best_accuracy=self.best_accuracy, history=self.history,
                      device=self.device, timing={
                          "data": torch.tensor(self.data_times, dtype=torch.float64),
                          "compute": torch.tensor(self.compute_times, dtype=torch.float64),
                          "samples": self.samples}, epoch_loss=list(self.epoch_loss))
        train_state.save(self.rec.path("checkpoints", "last.pt"), **kwargs)
        if tag:
            train_state.save(self.rec.path("checkpoints", f"{tag}.pt"), **kwargs)

    def export_backbone(self) -> Optional[str]:
        if not (self.is_main and self.rec):
            return None
        from . import atomic

        path = self.rec.path("backbone.pth")
        atomic.torch_save(train_state.unwrap(self.face).backbone.state_dict(), path)
        return path

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        cfg = self.cfg
        self._started = time.perf_counter()
        self.start_step = self.global_step  # where this segment starts (after a restore)
        while self.epoch < cfg.epochs and self.global_step < self.total_steps:
            self.train_epoch()
            if self.step_in_epoch == 0:  # the epoch finished
                if cfg.eval_every and self.vset is not None and (self.epoch % cfg.eval_every == 0
                                                                or self.global_step >= self.total_steps):
                    self.evaluate()
                if cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0:
                    self.save_checkpoint(tag=f"epoch{self.epoch:03d}")
        if self.vset is not None and not self.verified:  # the same decision on every rank
            self.evaluate()
        return self.results()

    def train_epoch(self) -> None:
        self.data.set_epoch(self.epoch)
        self.face.train()
        steps = min(self.steps_per_epoch, self.total_steps - self.global_step + self.step_in_epoch)
        it = iter(self.data)
        if self.step_in_epoch:  # resumed inside an epoch: the sampler order is deterministic, skip ahead
            for _ in range(self.step_in_epoch):
                next(it, None)
        if self._resume_rng is not None:
            # applied after the skip, so the skipped batches' augmentation does not shift the RNG
            train_state.set_rng_state(self._resume_rng, self.device)
            self._resume_rng = None
        bar = self._progress(steps)
        self.in_steps = True
        try:
            loss_sum, loss_count = self._steps(it, steps, bar)
        finally:
            self.in_steps = False
            if bar is not None:
                bar.close()
        if self.step_in_epoch == 0:
            raise ArcbenchError(f"epoch {self.epoch + 1} produced no usable batch "
                                f"({getattr(self.data, 'bad_images', 0)} bad images so far)", self.cfg.train_data)
        if steps <= self.step_in_epoch < self.steps_per_epoch:
            return  # --max-steps ended the run inside this epoch: a resume that extends it goes on here
        # a loader that ran dry early (bad batches dropped) still ends the epoch
        epoch_loss = loss_sum / max(1, loss_count)
        self.history["epoch_loss"].append(epoch_loss)
        if self.rec and self.is_main:
            self.rec.log((self.epoch + 1,), {"train.loss": epoch_loss})
        self.epoch += 1
        self.step_in_epoch = 0
        self._eta(f"epoch {self.epoch}/{self.cfg.epochs} done (loss {epoch_loss:.4f})")

    def _eta(self, what: str) -> None:
        """Without a progress bar (output to a file or a pipe) say where the run is, with an ETA."""
        if not self.is_main or self.cfg.quiet or sys.stdout.isatty() or not self.steps_this_process:
            return
        elapsed = time.perf_counter() - self._started
        left = max(0, self.total_steps - self.global_step) * elapsed / self.steps_this_process
        self.log(f"arcbench: {what} at step {self.global_step}/{self.total_steps}, {_duration(elapsed)} in; "
                 f"about {_duration(left)} to go")

    def _steps(self, it, steps: int, bar):
        """The hot loop over this epoch's remaining steps; returns ``(loss sum, losses read)``."""
        cfg, dev = self.cfg, self.device
        buf = torch.zeros(max(1, cfg.log_interval), device=self.tdev)
        pending = []  # (global_step, lr, data_time, compute_time) since the last flush
        if self.step_in_epoch == 0:
            self.epoch_loss = [0.0, 0]  # sum and count of the losses read this epoch (checkpointed)
        images_per_step = cfg.per_process_batch
        cl = torch.channels_last if cfg.channels_last else torch.contiguous_format
        while self.step_in_epoch < steps:
            # every timer read is dev.timestamp(): synchronize, then perf_counter
            t0 = dev.timestamp()
            try:
                images, labels = next(it)
            except StopIteration:
                break
            images = images.to(self.tdev, non_blocking=True, memory_format=cl)
            labels = labels.to(self.tdev, non_blocking=True)
            t1 = dev.timestamp()  # the host-to-device copy is data time, not compute
            buf[len(pending)] = self.train_step(images, labels)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            t2 = dev.timestamp()
            pending.append((self.global_step, lr, t1 - t0, t2 - t1))
            self.global_step += 1
            self.step_in_epoch += 1
            self.steps_this_process += 1
            if self.steps_this_process == 1:
                self._eta("first step done")
            self.samples += images.shape[0]
            if self.steps_this_process > cfg.timing_warmup:
                self.data_times.append(t1 - t0)
                self.compute_times.append(t2 - t1)
            if bar is not None:
                bar.update(1)
            checkpoint_due = bool(cfg.checkpoint_steps) and self.global_step % cfg.checkpoint_steps == 0
            if pending and (len(pending) == buf.numel() or self.step_in_epoch >= steps or checkpoint_due
                            or self.stop_requested):
                # a checkpoint or a stop also flushes: every step before it is logged and in the epoch loss
                self._add_epoch_loss(*self._flush(buf, pending, bar, images_per_step))
                pending = []
            if checkpoint_due:
                self.save_checkpoint()
            if self.stop_requested:
                raise KeyboardInterrupt(self.stop_requested)
        if pending:
            self._add_epoch_loss(*self._flush(buf, pending, bar, images_per_step))
        return tuple(self.epoch_loss)

    def _add_epoch_loss(self, total: float, count: int) -> None:
        self.epoch_loss = [self.epoch_loss[0] + total, self.epoch_loss[1] + count]

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimisation step (forward, loss, backward, optimizer, scaler) on a batch already
        on the device; returns the detached loss without a host sync.  The lr schedule, timing
        and logging stay in :meth:`train_epoch`; benchmarks time exactly this body."""
        cfg = self.cfg
        with self.device.autocast(cfg.amp):
            out = self.model(images, labels)
        # a head that computes its own loss (Partial FC, fp32 inside) returns it; else logits
        loss = out.float() if self.face.head_computes_loss else F.cross_entropy(out.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            if self.face.head_sharded:
                from .plugins.heads.partial_fc import clip_grad_norm_

                # the norm over the whole model: the shards' squares are summed over the ranks
                clip_grad_norm_(self.face.backbone.parameters(), self.face.head.parameters(), cfg.grad_clip,
                                self.face.head.group)
            else:
                nn.utils.clip_grad_norm_(self.face.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _flush(self, buf, pending, bar, images_per_step):
        """One host sync per interval: read the buffered losses, guard, log."""
        n = len(pending)
        values = buf[:n].tolist()
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            step = pending[bad[0]][0] + 1
            raise NonFiniteLoss(f"loss became {values[bad[0]]} at step {step}; stopped, last good checkpoint kept")
        if self.is_main:
            self.history["loss"].extend([[p[0] + 1, v] for p, v in zip(pending, values)])
            gbatch = images_per_step * self.world_size
            # without a progress bar, the interval's last record is printed as well (tcap_dllogger's
            # stdout backend when present, else the DLLL line below); with a bar, nothing is
            echo = bar is None and not self.cfg.quiet
            if self.rec:
                for i, ((gstep, lr, dt, ct), v) in enumerate(zip(pending, values)):
                    ep, it = divmod(gstep, self.steps_per_epoch)
                    self.rec.log((ep + 1, it + 1), {
                        "train.loss": v, "train.lr": lr, "train.data_time": dt, "train.compute_time": ct,
                        # train.ips: this rank's images/s (the model-zoo contract); total: all ranks
                        "train.ips": images_per_step / max(dt + ct, 1e-12),
                        "train.total_ips": gbatch / max(dt + ct, 1e-12),
                        "train.compute_ips": gbatch / max(ct, 1e-12)}, echo=echo and i == n - 1)
                echo = echo and not self.rec.echoes
            last_dt, last_ct = pending[-1][2], pending[-1][3]
            ips = gbatch / max(last_dt + last_ct, 1e-12)
            if bar is not None:
                bar.set_postfix(loss=f"{values[-1]:.3f}", ips=f"{ips:.0f}", lr=f"{pending[-1][1]:.4g}")
            elif echo:
                ep, it = divmod(pending[-1][0], self.steps_per_epoch)
                self.log(f"DLLL epoch {ep + 1} step {it + 1}/{self.steps_per_epoch} "
                         f"train.loss {values[-1]:.4f} train.total_ips {ips:.1f} train.lr {pending[-1][1]:.6f}")
        return sum(values), n

    def _progress(self, steps):
        if not self.is_main or self.cfg.quiet or not sys.stdout.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=steps, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                    unit="step", dynamic_ncols=True, leave=False)

    # ------------------------------------------------------------- evaluate
    def evaluate(self) -> Optional[dict]:
        """Verification, sharded: every rank embeds its share of the images, rank 0 scores.

        Every rank calls this at the same point, so the collectives inside match."""
        from .evaluate import evaluate

        face = train_state.unwrap(self.face)
        result = evaluate(face.backbone, self.device, self.vset, batch_size=self.cfg.eval_batch_size,
                          flip=self.cfg.eval_flip, amp=self.cfg.eval_precision == "amp",
                          workers=self.cfg.workers, progress=self.is_main and not self.cfg.quiet
                          and sys.stdout.isatty(), sharded=True)
        self.verified = True
        if self.is_main:
            self.last_eval = result
            acc = float(result["accuracy"])
            self.best_accuracy = acc if self.best_accuracy is None else max(self.best_accuracy, acc)
            self.history["epoch_accuracy"].append([self.epoch, acc, float(result["accuracy_std"])])
            if self.rec:
                self.rec.log((self.epoch,), {"val.lfw.accuracy": acc,
                                             "val.lfw.accuracy_std": float(result["accuracy_std"]),
                                             "val.ips": float(result.get("images_per_second") or 0.0)})
            if not self.cfg.quiet:
                self.log(f"epoch {self.epoch}: verification accuracy {acc:.4f} ± {result['accuracy_std']:.4f} "
                         f"on {result.get('name', 'pairs')} ({result.get('pairs_used')} pairs)")
        return result

    # -------------------------------------------------------------- results
    def results(self) -> dict:
        """This rank's figures; throughput is summed over ranks by the caller."""
        out = step_stats(self.data_times, self.compute_times, self.cfg.per_process_batch)
        mem = self.device.memory_stats().get("peak_memory")
        out["peak_memory"] = mem if mem is not None else host_peak_rss()
        out["peak_memory_kind"] = "device" if mem is not None else "host_rss"
        out["samples"] = self.samples
        out["start_step"] = getattr(self, "start_step", self.global_step)
        out["steps"] = self.global_step
        out["epochs"] = self.epoch
        out["final_loss"] = self.history["loss"][-1][1] if self.history["loss"] else None
        out["bad_images"] = int(getattr(self.data, "bad_images", 0) or 0)
        from .plugins.heads.partial_fc import state_bytes

        head = self.face.head
        # the head's size on this rank (rank 0 holds the largest shard): what the class count costs
        out["num_classes"] = int(self.data.num_classes)
        out["sample_rate"] = float(getattr(head, "sample_rate", 1.0))
        out["head_memory"] = state_bytes(head, self.optimizer)
        out["head_params_per_rank"] = int(sum(p.numel() for p in head.parameters()))
        if self.last_eval is not None:
            r = self.last_eval
            out.update(lfw_accuracy=float(r["accuracy"]), lfw_accuracy_std=float(r["accuracy_std"]),
                       val_at_far=r.get("val"), auc=r.get("auc"), eer=r.get("eer"),
                       eval_pairs=r.get("pairs_used"), eval_pairs_skipped=r.get("pairs_skipped"))
        out["best_lfw_accuracy"] = self.best_accuracy
        return out
