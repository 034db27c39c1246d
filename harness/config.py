"""RunConfig: every setting of a run, in sections that each validate themselves.

It is saved as ``config.json`` in the run directory, flat and in a fixed order, so every figure
in a report traces back to the exact settings that produced it, and ``--resume`` reloads it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Optional

from .config_sections import (AMP_DTYPES, COMPILE_MODES, DEFAULT_EPOCHS, DEFAULT_LR, EMBEDDED_EPOCHS,  # noqa: F401
                              EMBEDDED_LR, LR_LIMITS, NOMINAL_BATCH, DataConfig, DistConfig, EvalConfig,
                              ModelConfig, OptimConfig, RecordingConfig, ScheduleConfig, Section, _bad)
from .errors import ArcbenchError

#: RunConfig's sections: attribute name -> class, in validation order
SECTIONS = {"dist": DistConfig, "schedule": ScheduleConfig, "optim": OptimConfig, "eval": EvalConfig,
            "recording": RecordingConfig, "model": ModelConfig, "data": DataConfig}
#: the flat names (command line, ``config.json``, ``RunConfig(**flat)``) in ``config.json``'s order
FLAT_NAMES = (
    "mode", "device", "backbone", "head", "margin_s", "margin_m", "margin", "sample_rate", "train_data",
    "annotation", "val_data", "val_pairs", "val_bin", "weights", "epochs", "max_steps", "batch_size", "lr",
    "scale_lr", "optimizer", "momentum", "weight_decay", "lr_schedule", "warmup_steps", "grad_clip",
    "precision", "eval_precision", "compile", "compile_mode", "amp_dtype", "deterministic", "channels_last",
    "seed", "nproc", "nnodes", "node_rank", "master_addr", "master_port", "max_restarts", "workers", "decode",
    "eval_batch_size", "eval_every", "eval_flip", "checkpoint_every", "checkpoint_steps", "log_interval",
    "timing_warmup", "dist_timeout", "collective_wait", "on_bad_image", "record", "out", "run_id", "quiet",
    "synthetic_classes", "synthetic_steps")
#: flat name -> (section, field); mode and device are RunConfig's own
FLAT_PLACES = {f.metadata.get("flat", f.name): (section, f.name)
               for section, cls in SECTIONS.items() for f in fields(cls)}


@dataclass(init=False)
class RunConfig:
    """Every setting of a run, in sections; built from flat names (``RunConfig(lr=0.1)``) or sections."""
    mode: str                           # train | eval | bench
    device: str
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    eval: EvalConfig
    dist: DistConfig
    recording: RecordingConfig

    def __init__(self, mode: str = "train", device: str = "auto", **given):
        """``given``: flat names (each goes to its section) and whole sections (copied; a flat name
        given beside its section changes the copy); an unknown name is a TypeError."""
        self.mode, self.device = mode, device
        bases = {s: given.pop(s) for s, cls in SECTIONS.items() if isinstance(given.get(s), cls)}
        flat = {name: given.pop(name) for name in list(given) if name in FLAT_PLACES}
        if given:
            wrong = [f"{n}= takes a {SECTIONS[n].__name__}" for n in given if n in SECTIONS]
            raise TypeError("RunConfig: " + ("; ".join(wrong) or f"unknown settings {', '.join(sorted(given))}"))
        for section, cls in SECTIONS.items():
            changes = {fld: flat[name] for name, (sec, fld) in FLAT_PLACES.items() if sec == section and name in flat}
            base = bases.get(section)
            setattr(self, section, dataclasses.replace(base, **changes) if base is not None else cls(**changes))

    # ---------------------------------------------------------------- derived
    @property
    def amp(self) -> bool:
        return self.optim.precision == "amp"

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def per_process_batch(self) -> int:
        return max(1, self.schedule.batch_size // self.world_size)

    def effective_lr(self) -> float:
        if not self.optim.scale_lr:
            return self.optim.lr
        lo, hi = LR_LIMITS[self.optim.optimizer]
        return min(max(self.schedule.batch_size / NOMINAL_BATCH * self.optim.lr, lo), hi)

    def min_lr(self) -> float:
        """The schedules' floor: the reference's Min_lr_fit (see :mod:`arcbench.train.schedule`)."""
        from .train.schedule import reference_min_lr

        return reference_min_lr(self.optim.lr, self.schedule.batch_size, self.optim.optimizer,
                                self.optim.scale_lr, NOMINAL_BATCH)

    # ------------------------------------------------------------- validation
    def validate(self) -> "RunConfig":
        """Each section checks its own values; the checks that span sections are here."""
        if self.mode not in ("train", "eval", "bench"):
            _bad(f"unknown mode {self.mode!r}")
        self.dist.validate()
        self.schedule.validate()
        if self.schedule.batch_size % self.world_size:
            _bad(f"batch size {self.schedule.batch_size} does not split evenly over {self.world_size} processes")
        for section in SECTIONS:
            if section not in ("dist", "schedule"):
                getattr(self, section).validate()
        return self

    # ---------------------------------------------------------------- storage
    def flat(self) -> dict:
        """The settings by flat name, in ``config.json``'s order."""
        own = {"mode": self.mode, "device": self.device}
        return {name: copy.deepcopy(own[name] if name in own else getattr(getattr(self, FLAT_PLACES[name][0]),
                                                                             FLAT_PLACES[name][1]))
                for name in FLAT_NAMES}

    def to_dict(self) -> dict:
        d = self.flat()
        d["effective_lr"] = self.effective_lr()
        d["min_lr"] = self.min_lr()
        d["per_process_batch"] = self.per_process_batch
        d["amp"] = self.amp
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        kwargs = {k: v for k, v in d.items() if k in FLAT_NAMES}
        if "lr_schedule" not in d and "mode" in d:
            # a run recorded before --lr-schedule existed trained with the per-iteration schedule
            kwargs["lr_schedule"] = "cosine"
            if kwargs.get("head") == "combined":
                kwargs["margin_m"] = None  # it was never applied to the combined head
        return cls(**kwargs)

    @classmethod
    def load(cls, path) -> "RunConfig":
        try:
            with open(path) as fh:
                return cls.from_dict(json.load(fh))
        except (OSError, ValueError, TypeError) as exc:
            raise ArcbenchError(f"cannot read run config: {exc}", path) from None

    def resumed(self, epochs: Optional[int] = None, max_steps: Optional[int] = None,
                nproc: Optional[int] = None, quiet: Optional[bool] = None,
                nnodes: Optional[int] = None) -> "RunConfig":
        """This saved run continued with the flags given beside ``--resume`` (None: not given).

        ``epochs``/``max_steps`` may extend it; ``nproc`` changes the process count (the global
        batch stays, a sharded head is re-sharded), ``nnodes`` the node count (an outer launcher's);
        nothing else changes on resume."""
        s, d = self.schedule, self.dist
        return self.replace(epochs=max(s.epochs, epochs or 0), max_steps=max_steps or s.max_steps,
                            nproc=nproc or d.nproc, quiet=self.recording.quiet if quiet is None else quiet,
                            nnodes=nnodes or d.nnodes)

    def replace(self, **changes) -> "RunConfig":
        """A copy with ``changes`` by flat name (``lr=0.1``) or whole sections (``optim=...``)."""
        kept = {"mode": self.mode, "device": self.device, **{s: getattr(self, s) for s in SECTIONS}}
        return RunConfig(**{**kept, **changes})
