"""Everything one process trains with: model, head, optimiser, scaler and lr schedule.

Built in one place so the training loop, the benchmarks and the tests get
the same objects: DDP wraps only what is data-parallel (a sharded head
stays outside), the loss is part of the step's module (:class:`WithLoss`),
and ``torch.compile`` wraps the result when asked, loss included.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import head as head_contract
from ..config import OptimConfig, RunConfig
from ..errors import ArcbenchError


class FaceModel(nn.Module):
    """Backbone + margin head, so DDP and torch.compile see one module."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images), labels)

    @property
    def head_computes_loss(self) -> bool:
        """The head returns the loss itself (Partial FC), not logits for F.cross_entropy
        (:func:`arcbench.head.computes_loss`)."""
        return head_contract.computes_loss(self.head)

    @property
    def head_sharded(self) -> bool:
        """The head's parameters are split across the ranks (Partial FC): kept out of DDP,
        checkpointed through a world-size independent full state, clipped by the global norm
        (:func:`arcbench.head.is_sharded`)."""
        return head_contract.is_sharded(self.head)


class WithLoss(nn.Module):
    """The step's forward: model and loss in one module, so ``torch.compile`` captures both.
    The loss is fp32: the cross-entropy of the head's logits, or the loss a head computes itself
    (Partial FC)."""

    def __init__(self, model: nn.Module, head_computes_loss: bool):
        super().__init__()
        self.model, self.head_computes_loss = model, bool(head_computes_loss)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.model(images, labels)
        return out.float() if self.head_computes_loss else F.cross_entropy(out.float(), labels)


def compile_model(model: nn.Module, device, mode=None) -> nn.Module:
    """``torch.compile`` with the device plugin's backend and, when given, a ``--compile-mode``."""
    kwargs = {"backend": device.compile_backend}
    if mode and mode != "default":
        kwargs["mode"] = mode
    return torch.compile(model, **kwargs)


def uses_cuda_graphs(cfg: RunConfig) -> bool:
    """The compile modes that capture CUDA graphs: each step must then be marked as a new one."""
    return bool(cfg.optim.compile) and cfg.optim.compile_mode in ("reduce-overhead", "max-autotune")


def make_optimizer(optim: OptimConfig, lr: float, params, fused: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW at ``lr`` (the run's effective lr).  ``fused``: the whole
    step as one fused kernel where torch has it; with an fp16 GradScaler that also removes the scaler's per-step ``found_inf.item()`` (a
    host sync), because a fused step takes the inf check as a tensor.  Else foreach."""
    params = list(params)
    if optim.optimizer == "sgd":
        cls, kwargs = torch.optim.SGD, dict(lr=lr, momentum=optim.momentum, nesterov=True,
                                            weight_decay=optim.weight_decay)
    else:
        cls, kwargs = torch.optim.AdamW, dict(lr=lr, weight_decay=optim.weight_decay)
    for extra in ([{"fused": True}] if fused else []) + [{"foreach": True}, {}]:
        try:
            opt = cls(params, **extra, **kwargs)
        except (TypeError, RuntimeError, ValueError):  # an older torch, or no fused kernel for these tensors
            continue
        if extra.get("fused") and cls is torch.optim.SGD:
            _zero_momentum(opt)
        return opt
    return cls(params, **kwargs)


def _zero_momentum(opt: torch.optim.SGD) -> None:
    """Start fused SGD's momentum buffers at zero.  Fused SGD allocates them uninitialised
    (``empty_like``) at its first step and fills them in the kernel, which an fp16 GradScaler's
    skipped step (inf gradients: usual at the first steps) never runs; the next step then reads
    garbage (seen: loss NaN at step 5 on the CPU, torch 2.13).  With dampening 0 a zero buffer gives
    exactly the first step's ``buf = grad``."""
    for group in opt.param_groups:
        if group["momentum"] and not group["dampening"]:
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def build_face_model(cfg: RunConfig, num_classes: int) -> FaceModel:
    """Backbone and head from the registries; s defaults to the backbone's margin scale."""
    from ..registry import create_head, get_backbone, head_kwargs

    model = cfg.model
    spec = get_backbone(model.backbone)
    backbone = spec.create()
    # only what the head's spec lists; None: the head's own default (a sharded head is split over
    # the process group initialised before this is called)
    given = {"s": model.margin_s, "m": model.margin_m, "margin": model.margin, "sample_rate": model.sample_rate,
             "seed": cfg.schedule.seed}
    kwargs = head_kwargs(model.head, given, defaults={"s": spec.margin_scale})
    head = create_head(model.head, spec.embedding_size, num_classes, **kwargs)
    missing = head_contract.missing_hooks(head)
    if missing:  # refused before the first step, not at the first checkpoint
        raise ArcbenchError(f"--head {model.head} is sharded but does not implement {', '.join(missing)} "
                            "(the head contract: arcbench.head)")
    return FaceModel(backbone, head)


@dataclass
class Training:
    """What :func:`build_training` returns; ``model`` is what the step calls (model and loss,
    DDP/compiled), ``face`` the plain module underneath (what checkpoints and evaluation use)."""

    face: FaceModel
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: object
    steps_per_epoch: int
    total_steps: int


def _data_parallel(face: FaceModel, device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    with warnings.catch_warnings():
        # torch >= 2.11 deprecates broadcast_buffers; its replacement is missing from 2.0
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*")
        if face.head_sharded:
            # each rank keeps its own shard of the centres: only the backbone is data-parallel
            ddp = DDP(face.backbone, device_ids=device.ddp_device_ids(), broadcast_buffers=False,
                      gradient_as_bucket_view=True)
            return FaceModel(ddp, face.head)  # the head stays outside DDP
        return DDP(face, device_ids=device.ddp_device_ids(), broadcast_buffers=False,
                   gradient_as_bucket_view=True)


def build_training(cfg: RunConfig, device, num_classes: int, steps_per_epoch: int,
                   world_size: int = 1, what: str = "") -> Training:
    """Model on the process's bound card, optimiser, lr schedule and grad scaler for one process."""
    from .schedule import lr_factor

    if steps_per_epoch == 0:
        raise ArcbenchError("the training set is smaller than one batch", what or cfg.data.train_data)
    face = build_face_model(cfg, num_classes).to(device.torch_device())
    if cfg.optim.channels_last:
        face = face.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg.optim, cfg.effective_lr(), face.parameters(), fused=device.use_fused_optimizer())
    total = steps_per_epoch * cfg.schedule.epochs
    if cfg.schedule.max_steps:
        total = min(total, cfg.schedule.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total, steps_per_epoch))
    model = WithLoss(_data_parallel(face, device) if world_size > 1 else face, face.head_computes_loss)
    if cfg.optim.compile:
        model = compile_model(model, device, cfg.optim.compile_mode)
    scaler = device.grad_scaler(cfg.amp, amp_dtype(cfg))
    return Training(face, model, optimizer, scheduler, scaler, steps_per_epoch, total)


def amp_dtype(cfg: RunConfig):
    """The torch dtype of ``--amp-dtype`` (None: the device plugin's own)."""
    from ..config import AMP_DTYPES

    return getattr(torch, AMP_DTYPES[cfg.optim.amp_dtype]) if cfg.optim.amp_dtype else None
