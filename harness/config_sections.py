"""RunConfig's sections: one small dataclass per concern, each refusing its own bad values.

The command line and ``config.json`` name every setting flat (``--lr``, ``"lr"``); a section holds
the settings of one concern, so a function can take just the part of a run's settings it uses.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
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



def _bad(msg):
    raise ArcbenchError(msg)


def _check_paths(*flagged) -> None:
    for flag, path in flagged:
        if path and path != "synthetic" and not os.path.exists(path):
            raise ArcbenchError(f"{flag}: path does not exist", path)


class Section:
    """One concern's settings; :meth:`validate` refuses its own bad values.  A section is never a
    truth value: ``if cfg.recording:`` fails loudly rather than reading True."""

    def validate(self):
        return self

    def __bool__(self):
        raise TypeError(f"{type(self).__name__} is a config section, not a flag")


@dataclass
class DataConfig(Section):
    """What the run trains and verifies on, and how its images are read."""
    train_data: Optional[str] = None    # None: the embedded synthetic-faces set
    annotation: Optional[str] = None
    val_data: Optional[str] = None
    val_pairs: Optional[str] = None
    val_bin: Optional[Union[str, List[str]]] = None  # one .bin or folder of them, or a list (several sets)
    workers: Optional[int] = None
    decode: str = "host"                # host | device (nvJPEG on the card: opt-in, not bit-identical)
    on_bad_image: str = "skip"          # skip | fail
    synthetic_classes: int = 1000       # classes for --train-data synthetic
    synthetic_steps: int = 100          # steps per epoch for --train-data synthetic

    def validate(self) -> "DataConfig":
        if self.workers is not None and self.workers < 0:
            _bad(f"--workers must be 0 or more, got {self.workers}")
        if self.decode not in ("host", "device"):
            _bad(f"--decode must be host or device, got {self.decode!r}")
        if self.train_data == "synthetic" and (self.synthetic_classes <= 0 or self.synthetic_steps <= 0):
            _bad("--synthetic-classes and --synthetic-steps must be positive")
        if self.on_bad_image not in ("skip", "fail"):
            _bad("--on-bad-image must be skip or fail")
        if bool(self.val_data) != bool(self.val_pairs):
            _bad("--val-data and --val-pairs go together")
        _check_paths(("--train-data", self.train_data), ("--val-data", self.val_data),
                     ("--val-pairs", self.val_pairs), ("--annotation", self.annotation))
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


@dataclass
class ModelConfig(Section):
    """The network: backbone, margin head and the weights it starts from."""
    backbone: str = "mobilefacenet"
    head: str = "arcface"
    margin_s: Optional[float] = None    # None: the backbone's default (32 mobilefacenet, 64 others)
    margin_m: Optional[float] = None    # None: the head's own default (arcface 0.5, cosface 0.35)
    margin: Optional[str] = None        # partial_fc: arcface | cosface | combined (None: arcface)
    sample_rate: float = 1.0            # partial_fc: fraction of each shard's class centres per step
    weights: Optional[str] = None       # eval mode / fine-tuning start point

    def validate(self) -> "ModelConfig":
        if self.margin_s is not None and not (self.margin_s > 0 and math.isfinite(self.margin_s)):
            _bad(f"--margin-s must be a positive number, got {self.margin_s}")
        if self.margin_m is not None and not math.isfinite(self.margin_m):
            _bad(f"--margin-m must be a finite number, got {self.margin_m}")
        if not (0.0 < self.sample_rate <= 1.0):
            _bad(f"--sample-rate must be in (0, 1], got {self.sample_rate}")
        from . import registry

        if self.head in registry.heads():  # an unknown name is the runner's error, with the known ones
            registry.head_kwargs(self.head, {"s": self.margin_s, "m": self.margin_m, "margin": self.margin,
                                             "sample_rate": self.sample_rate})
        if self.margin is not None and self.margin not in ("arcface", "cosface", "combined"):
            _bad(f"unknown --margin {self.margin!r}; known: arcface, cosface, combined")
        if self.margin_m is not None and self.margin == "combined":
            _bad("--margin-m does not apply to the combined margin (cos(m1*theta + m2) - m3, "
                 "m1=1, m2=0.5, m3=0); use --margin arcface or cosface to set a margin")
        _check_paths(("--weights", self.weights))
        return self


@dataclass
class OptimConfig(Section):
    """How a step updates the weights: optimizer, lr, numerics and compilation."""
    optimizer: str = "sgd"              # sgd | adamw
    lr: Optional[float] = None          # nominal, for batch 64; scaled and clamped. None: DEFAULT_LR
    scale_lr: bool = True
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: Optional[float] = None
    precision: str = "fp32"             # fp32 | amp
    amp_dtype: Optional[str] = None     # bf16 | fp16 with AMP; None: the device's default (set by the runner)
    compile: bool = False
    compile_mode: Optional[str] = None  # torch.compile mode (see COMPILE_MODES); None: torch's default
    channels_last: bool = True
    deterministic: bool = False         # deterministic algorithms, no cuDNN autotuning

    def __post_init__(self):
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, DEFAULT_LR["sgd"])

    def validate(self) -> "OptimConfig":
        if not (self.lr > 0) or math.isinf(self.lr):
            _bad(f"--lr must be a positive number, got {self.lr}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            _bad(f"--grad-clip must be a positive number, got {self.grad_clip}")
        if self.optimizer not in LR_LIMITS:
            _bad(f"unknown optimizer {self.optimizer!r}; known: {', '.join(LR_LIMITS)}")
        if self.precision not in ("fp32", "amp"):
            _bad(f"unknown precision {self.precision!r}; known: fp32, amp")
        if self.amp_dtype is not None and self.amp_dtype not in AMP_DTYPES:
            _bad(f"unknown --amp-dtype {self.amp_dtype!r}; known: {', '.join(AMP_DTYPES)}")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            _bad(f"unknown --compile-mode {self.compile_mode!r}; known: {', '.join(COMPILE_MODES)}")
        return self


@dataclass
class ScheduleConfig(Section):
    """How long the run lasts, its global batch, the lr's course over it, and the seed."""
    epochs: int = DEFAULT_EPOCHS
    max_steps: Optional[int] = None
    batch_size: int = 64                # global (all processes together)
    lr_schedule: str = "reference"      # reference | cosine | step (see arcbench.train.schedule)
    warmup_steps: Optional[int] = None  # cosine only. None: 5% of the run, at most one epoch
    seed: int = 0

    def validate(self) -> "ScheduleConfig":
        if self.batch_size <= 0:
            _bad(f"--batch-size must be positive, got {self.batch_size}")
        if self.epochs <= 0:
            _bad(f"--epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps <= 0:
            _bad(f"--max-steps must be positive, got {self.max_steps}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            _bad(f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        from .train.schedule import SCHEDULES

        if self.lr_schedule not in SCHEDULES:
            _bad(f"unknown --lr-schedule {self.lr_schedule!r}; known: {', '.join(SCHEDULES)}")
        return self


@dataclass
class EvalConfig(Section):
    """Verification during training: how often, in what precision, at what batch."""
    eval_precision: str = "fp32"        # fp32 | amp: verification during training (reference: fp32)
    eval_batch_size: int = 256
    eval_every: int = 1
    eval_flip: bool = False

    def validate(self) -> "EvalConfig":
        if self.eval_batch_size <= 0:
            _bad(f"--eval-batch-size must be positive, got {self.eval_batch_size}")
        if self.eval_precision not in ("fp32", "amp"):
            _bad(f"unknown --eval-precision {self.eval_precision!r}; known: fp32, amp")
        return self


@dataclass
class DistConfig(Section):
    """The processes: how many, on how many nodes, where they meet, how long they wait."""
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29505
    max_restarts: int = 0               # arcbench's own launcher: restart failed workers from the last checkpoint
    dist_timeout: float = 1800.0        # s: the process group's limit (DDP waits under it)
    collective_wait: float = 120.0      # s: a rank waits this long at a harness collective for the others

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def validate(self) -> "DistConfig":
        if self.nproc <= 0 or self.nnodes <= 0:
            _bad(f"--nproc and --nnodes must be positive, got {self.nproc} and {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            _bad(f"--node-rank {self.node_rank} is outside 0..{self.nnodes - 1}")
        if not (self.dist_timeout > 0 and self.collective_wait > 0):
            _bad(f"--collective-wait and the process-group timeout must be positive, got {self.collective_wait} "
                 f"and {self.dist_timeout}")
        if not 1 <= self.master_port <= 65535:
            _bad(f"--master-port must be 1..65535, got {self.master_port}")
        return self


@dataclass
class RecordingConfig(Section):
    """What the run writes and says: its directory, logs, timing window and checkpoints."""
    #: metrics.jsonl, progress; off only to measure overhead.  Its flat name (flag, config.json) is "record"
    enabled: bool = field(default=True, metadata={"flat": "record"})
    out: str = "runs"
    run_id: Optional[str] = None
    quiet: bool = False
    log_interval: int = 20
    timing_warmup: int = 5              # steps excluded from throughput figures, per process start
    checkpoint_every: int = 1           # epochs; 0 disables
    checkpoint_steps: int = 0           # also every N steps within an epoch; 0 disables

    def validate(self) -> "RecordingConfig":
        if self.checkpoint_every < 0 or self.checkpoint_steps < 0:
            _bad("--checkpoint-every and --checkpoint-steps must be 0 (never) or positive")
        if self.log_interval <= 0:
            _bad(f"--log-interval must be positive, got {self.log_interval}")
        return self
