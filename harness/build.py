"""Everything one process trains with: model, head, optimiser, scaler and lr schedule.

Built in one place so the training loop, the benchmarks and the tests get
the same objects: DDP wraps only what is data-parallel (a sharded head
stays outside), and ``torch.compile`` wraps the result when asked.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .config import RunConfig
from .errors import ArcbenchError


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


def build_face_model(cfg: RunConfig, num_classes: int) -> FaceModel:
    """Backbone and head from the registries; s defaults to the backbone's margin scale."""
    from .registry import create_head, get_backbone, head_kwargs

    spec = get_backbone(cfg.backbone)
    backbone = spec.create()
    # only what the head's spec lists; None: the head's own default (a sharded head is split over
    # the process group initialised before this is called)
    given = {"s": cfg.margin_s, "m": cfg.margin_m, "margin": cfg.margin, "sample_rate": cfg.sample_rate,
             "seed": cfg.seed}
    kwargs = head_kwargs(cfg.head, given, defaults={"s": spec.margin_scale})
    return FaceModel(backbone, create_head(cfg.head, spec.embedding_size, num_classes, **kwargs))


@dataclass
class Training:
    """What :func:`build_training` returns; ``model`` is what the step calls (DDP/compiled),
    ``face`` the plain module underneath (what checkpoints and evaluation use)."""

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
        raise ArcbenchError("the training set is smaller than one batch", what or cfg.train_data)
    face = build_face_model(cfg, num_classes).to(device.torch_device())
    if cfg.channels_last:
        face = face.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, face.parameters())
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total, steps_per_epoch))
    model = _data_parallel(face, device) if world_size > 1 else face
    if cfg.compile:
        model = torch.compile(model, backend=device.compile_backend)
    return Training(face, model, optimizer, scheduler, device.grad_scaler(cfg.amp), steps_per_epoch, total)
