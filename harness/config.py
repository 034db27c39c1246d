"""RunConfig: every setting of a run in one validated dataclass.

It is saved as ``config.json`` in the run directory, so every figure in a
report traces back to the exact settings that produced it, and ``--resume``
reloads it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Union

from .errors import ArcbenchError

#: the reference's nominal batch: lr is given for batch 64 and scaled linearly
NOMINAL_BATCH = 64
#: clamp of the scaled lr, as in the reference (SGD, AdamW)
LR_LIMITS = {"sgd": (5e-4, 1e-1), "adamw": (3e-4, 1e-3)}
#: nominal lr (batch 64) per optimizer when --lr is not given: the reference's recommendation
DEFAULT_LR = {"sgd": 1e-2, "adamw": 1e-3}
#: --amp-dtype names and the torch dtypes they mean (as torch.dtype's name)
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
#: torch.compile modes --compile-mode takes; each device plugin says which it supports
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: epochs when --epochs is not given: the reference recipe's 50; 3 for the embedded synthetic set
DEFAULT_EPOCHS = 50
EMBEDDED_EPOCHS = 3
#: SGD lr (batch 64) for the embedded synthetic set when --lr is not given.  Its 3 epochs under the
#: reference schedule are one warm-up epoch (0.1 lr), one at lr and one at min_lr: at 1e-2 that
#: learns too little; at 0.1 it reaches 0.921 held-out accuracy (README)
EMBEDDED_LR = 0.1


@dataclass
class RunConfig:
    mode: str = "train"                 # train | eval | bench
    device: str = "auto"
    backbone: str = "mobilefacenet"
    head: str = "arcface"
    margin_s: Optional[float] = None    # None: the backbone's default (32 mobilefacenet, 64 others)
    margin_m: Optional[float] = None    # None: the head's own default (arcface 0.5, cosface 0.35)
    margin: Optional[str] = None        # partial_fc: arcface | cosface | combined (None: arcface)
    sample_rate: float = 1.0            # partial_fc: fraction of each shard's class centres per step
    train_data: Optional[str] = None    # None: the embedded synthetic-faces set
    annotation: Optional[str] = None
    val_data: Optional[str] = None
    val_pairs: Optional[str] = None
    val_bin: Optional[Union[str, List[str]]] = None  # one .bin or folder of them, or a list (several sets)
    weights: Optional[str] = None       # eval mode / fine-tuning start point
    epochs: int = DEFAULT_EPOCHS
    max_steps: Optional[int] = None
    batch_size: int = 64                # global (all processes together)
    lr: Optional[float] = None          # nominal, for batch 64; scaled and clamped. None: DEFAULT_LR
    scale_lr: bool = True
    optimizer: str = "sgd"              # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "reference"      # reference | cosine | step (see arcbench.train.schedule)
    warmup_steps: Optional[int] = None  # cosine only. None: 5% of the run, at most one epoch
    grad_clip: Optional[float] = None
    precision: str = "fp32"             # fp32 | amp
    eval_precision: str = "fp32"        # fp32 | amp: verification during training (reference: fp32)
    compile: bool = False
    compile_mode: Optional[str] = None  # torch.compile mode (see COMPILE_MODES); None: torch's default
    amp_dtype: Optional[str] = None     # bf16 | fp16 with AMP; None: the device's default (set by the runner)
    deterministic: bool = False         # deterministic algorithms, no cuDNN autotuning
    channels_last: bool = True
    seed: int = 0
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29505
    max_restarts: int = 0               # arcbench's own launcher: restart failed workers from the last checkpoint
    workers: Optional[int] = None
    decode: str = "host"                # host | device (nvJPEG on the card: opt-in, not bit-identical)
    eval_batch_size: int = 256
    eval_every: int = 1
    eval_flip: bool = False
    checkpoint_every: int = 1           # epochs; 0 disables
    checkpoint_steps: int = 0           # also every N steps within an epoch; 0 disables
    log_interval: int = 20
    timing_warmup: int = 5              # steps excluded from throughput figures, per process start
    dist_timeout: float = 1800.0        # s: the process group's limit (DDP waits under it)
    collective_wait: float = 120.0      # s: a rank waits this long at a harness collective for the others
    on_bad_image: str = "skip"          # skip | fail
    record: bool = True                 # metrics.jsonl, progress; off only to measure overhead
    out: str = "runs"
    run_id: Optional[str] = None
    quiet: bool = False
    synthetic_classes: int = 1000       # classes for --train-data synthetic
    synthetic_steps: int = 100          # steps per epoch for --train-data synthetic

    def __post_init__(self):
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, DEFAULT_LR["sgd"])

    # ---------------------------------------------------------------- derived
    @property
    def amp(self) -> bool:
        return self.precision == "amp"

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def per_process_batch(self) -> int:
        return max(1, self.batch_size // self.world_size)

    def effective_lr(self) -> float:
        if not self.scale_lr:
            return self.lr
        lo, hi = LR_LIMITS[self.optimizer]
        return min(max(self.batch_size / NOMINAL_BATCH * self.lr, lo), hi)

    def min_lr(self) -> float:
        """The schedules' floor: the reference's Min_lr_fit (see :mod:`arcbench.train.schedule`)."""
        from .train.schedule import reference_min_lr

        return reference_min_lr(self.lr, self.batch_size, self.optimizer, self.scale_lr, NOMINAL_BATCH)

    # ------------------------------------------------------------- validation
    def validate(self) -> "RunConfig":
        def bad(msg):
            raise ArcbenchError(msg)

        if self.mode not in ("train", "eval", "bench"):
            bad(f"unknown mode {self.mode!r}")
        if self.nproc <= 0 or self.nnodes <= 0:
            bad(f"--nproc and --nnodes must be positive, got {self.nproc} and {self.nnodes}")
        if self.batch_size <= 0:
            bad(f"--batch-size must be positive, got {self.batch_size}")
        if self.batch_size % self.world_size:
            bad(f"batch size {self.batch_size} does not split evenly over {self.world_size} processes")
        if not (self.lr > 0) or math.isinf(self.lr):
            bad(f"--lr must be a positive number, got {self.lr}")
        if self.epochs <= 0:
            bad(f"--epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps <= 0:
            bad(f"--max-steps must be positive, got {self.max_steps}")
        if not 0 <= self.node_rank < self.nnodes:
            bad(f"--node-rank {self.node_rank} is outside 0..{self.nnodes - 1}")
        if not (self.dist_timeout > 0 and self.collective_wait > 0):
            bad(f"--collective-wait and the process-group timeout must be positive, got {self.collective_wait} "
                f"and {self.dist_timeout}")
        if self.eval_batch_size <= 0:
            bad(f"--eval-batch-size must be positive, got {self.eval_batch_size}")
        if not 1 <= self.master_port <= 65535:
            bad(f"--master-port must be 1..65535, got {self.master_port}")
        if self.workers is not None and self.workers < 0:
            bad(f"--workers must be 0 or more, got {self.workers}")
        if self.decode not in ("host", "device"):
            bad(f"--decode must be host or device, got {self.decode!r}")
        if self.checkpoint_every < 0 or self.checkpoint_steps < 0:
            bad("--checkpoint-every and --checkpoint-steps must be 0 (never) or positive")
        if self.log_interval <= 0:
            bad(f"--log-interval must be positive, got {self.log_interval}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            bad(f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            bad(f"--grad-clip must be a positive number, got {self.grad_clip}")
        if self.margin_s is not None and not (self.margin_s > 0 and math.isfinite(self.margin_s)):
            bad(f"--margin-s must be a positive number, got {self.margin_s}")
        if self.margin_m is not None and not math.isfinite(self.margin_m):
            bad(f"--margin-m must be a finite number, got {self.margin_m}")
        if self.train_data == "synthetic" and (self.synthetic_classes <= 0 or self.synthetic_steps <= 0):
            bad("--synthetic-classes and --synthetic-steps must be positive")
        if self.optimizer not in LR_LIMITS:
            bad(f"unknown optimizer {self.optimizer!r}; known: {', '.join(LR_LIMITS)}")
        from .train.schedule import SCHEDULES

        if self.lr_schedule not in SCHEDULES:
            bad(f"unknown --lr-schedule {self.lr_schedule!r}; known: {', '.join(SCHEDULES)}")
        if not (0.0 < self.sample_rate <= 1.0):
            bad(f"--sample-rate must be in (0, 1], got {self.sample_rate}")
        from . import registry

        if self.head in registry.heads():  # an unknown name is the runner's error, with the known ones
            registry.head_kwargs(self.head, {"s": self.margin_s, "m": self.margin_m, "margin": self.margin,
                                             "sample_rate": self.sample_rate})
        if self.margin is not None and self.margin not in ("arcface", "cosface", "combined"):
            bad(f"unknown --margin {self.margin!r}; known: arcface, cosface, combined")
        if self.margin_m is not None and self.margin == "combined":
            bad("--margin-m does not apply to the combined margin (cos(m1*theta + m2) - m3, "
                "m1=1, m2=0.5, m3=0); use --margin arcface or cosface to set a margin")
        if self.precision not in ("fp32", "amp"):
            bad(f"unknown precision {self.precision!r}; known: fp32, amp")
        if self.amp_dtype is not None and self.amp_dtype not in AMP_DTYPES:
            bad(f"unknown --amp-dtype {self.amp_dtype!r}; known: {', '.join(AMP_DTYPES)}")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            bad(f"unknown --compile-mode {self.compile_mode!r}; known: {', '.join(COMPILE_MODES)}")
        if self.eval_precision not in ("fp32", "amp"):
            bad(f"unknown --eval-precision {self.eval_precision!r}; known: fp32, amp")
        if self.on_bad_image not in ("skip", "fail"):
            bad("--on-bad-image must be skip or fail")
        if bool(self.val_data) != bool(self.val_pairs):
            bad("--val-data and --val-pairs go together")
        for flag, path in (("--train-data", self.train_data), ("--val-data", self.val_data),
                           ("--val-pairs", self.val_pairs), ("--annotation", self.annotation),
                           ("--weights", self.weights)):
            if path and path != "synthetic" and not os.path.exists(path):
                raise ArcbenchError(f"{flag}: path does not exist", path)
        self.val_bin_files()  # every --val-bin exists; a folder holds at least one .bin
        return self

    def val_bin_files(self) -> List[str]:
        """Every ``.bin`` verification set of the run, in the order given; a folder gives its ``.bin``
        files in name order (``--val-bin DIR`` for lfw.bin, cfp_fp.bin, agedb_30.bin together)."""
        given = [self.val_bin] if isinstance(self.val_bin, str) else list(self.val_bin or [])
        files = []
        for path in given:
            if not os.path.exists(path):
                raise ArcbenchError("--val-bin: path does not exist", path)
            if os.path.isdir(path):
                found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(".bin"))
                if not found:
                    raise ArcbenchError("--val-bin: the folder holds no .bin verification set", path)
                files += found
            else:
                files.append(path)
        return files

    # ---------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["effective_lr"] = self.effective_lr()
        d["min_lr"] = self.min_lr()
        d["per_process_batch"] = self.per_process_batch
        d["amp"] = self.amp
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
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
        return self.replace(epochs=max(self.epochs, epochs or 0), max_steps=max_steps or self.max_steps,
                            nproc=nproc or self.nproc, quiet=self.quiet if quiet is None else quiet,
                            nnodes=nnodes or self.nnodes)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)
