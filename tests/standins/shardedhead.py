"""A third-party-style sharded head: class centres split over the ranks, through the head contract only.

Loaded with ``--plugin shardedhead`` (the tests put this folder on PYTHONPATH, so
spawned workers import it too).  It registers ``sharded``: a normalised-softmax head
(cosine logits times ``s``, no margin) whose ``[C, D]`` centres are split into
contiguous row ranges over the ranks, and it implements every hook of
:mod:`arcbench.head` its own way (not Partial FC's code): its own full checkpoint
state, re-sharded on load; its own gradient clipping; its own plan; the loss.

Every hook the core calls is recorded in :data:`CALLS` (this process) and, when
``$SHARDEDHEAD_LOG`` names a file, appended there as one JSON line per call
(the training runs in other processes).  Batches must be the same size on every
rank (the built-in loaders refill thinned batches).
"""
from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from torch import nn

from arcbench import hookimpl
from arcbench.head import HeadPlan, default_state_bytes

try:
    import torch.distributed as dist
except ImportError:  # pragma: no cover
    dist = None

FORMAT = "shardedhead/1"
#: (hook, rank, world size, details) of every hook call in this process
CALLS = []


def _on() -> bool:
    return dist is not None and dist.is_available() and dist.is_initialized()


def _world_rank():
    return (dist.get_world_size(), dist.get_rank()) if _on() else (1, 0)


def record(hook: str, **details) -> None:
    world, rank = _world_rank()
    entry = {"hook": hook, "rank": rank, "world": world, **details}
    CALLS.append(entry)
    path = os.environ.get("SHARDEDHEAD_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def rows_of(num_classes: int, world: int, rank: int):
    """Rank ``rank``'s contiguous rows; the first ``C % W`` ranks hold one more."""
    base, extra = divmod(num_classes, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _gather_rows(local: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The full ``[C, ...]`` tensor from every rank's rows (padded to the largest shard)."""
    world, _ = _world_rank()
    if world == 1:
        return local
    most = -(-num_classes // world)
    padded = local.new_zeros((most,) + tuple(local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([parts[r][:e - s] for r, (s, e) in
                      enumerate(rows_of(num_classes, world, r) for r in range(world))])


class _GatherBatch(torch.autograd.Function):
    """All-gather of the equal-sized batches; the gradient of every rank's rows is summed over
    the ranks (each rank's logits use every row) and scaled by the world size (DDP averages)."""

    @staticmethod
    def forward(ctx, x):
        world, rank = _world_rank()
        ctx.rows, ctx.rank, ctx.world = x.shape[0], rank, world
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows] * ctx.world


class _GatherClasses(torch.autograd.Function):
    """Every rank's ``[B, shard]`` logits side by side as ``[B, C]``; what follows is the same on
    every rank, so a rank's gradient is its own columns of the full one."""

    @staticmethod
    def forward(ctx, logits, num_classes):
        world, rank = _world_rank()
        ctx.span = rows_of(num_classes, world, rank)
        return _gather_rows(logits.t(), num_classes).t().contiguous()

    @staticmethod
    def backward(ctx, grad):
        start, end = ctx.span
        return grad[:, start:end], None


class ShardedCosine(nn.Module):
    """``forward(embeddings, labels)`` returns the mean cross-entropy of the global batch."""

    computes_loss = True
    sharded = True

    def __init__(self, in_features: int, num_classes: int, s: float = 16.0, seed: int = 0):
        super().__init__()
        self.world_size, self.rank = _world_rank()
        self.num_classes, self.in_features, self.s = int(num_classes), int(in_features), float(s)
        self.start, self.end = rows_of(self.num_classes, self.world_size, self.rank)
        full = torch.randn(self.num_classes, self.in_features, generator=torch.Generator().manual_seed(seed))
        self.weight = nn.Parameter(full[self.start:self.end].clone())  # the same centres at any world size

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = F.normalize(embeddings.float())
        labels = labels.long()
        if self.world_size > 1:
            x = _GatherBatch.apply(x)
            parts = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(parts, labels.contiguous())
            labels = torch.cat(parts)
        logits = self.s * x @ F.normalize(self.weight.float()).t()
        if self.world_size > 1:
            logits = _GatherClasses.apply(logits, self.num_classes)
        return F.cross_entropy(logits, labels)

    # ------------------------------------------------------------- the head contract's hooks
    def full_state(self, optimizer=None):
        """Every centre and its momentum, gathered (a collective on every rank)."""
        momentum = None if optimizer is None else optimizer.state.get(self.weight, {}).get("momentum_buffer")
        record("full_state", has_momentum=momentum is not None)
        weight = _gather_rows(self.weight.detach(), self.num_classes).cpu().clone()
        rows = None if momentum is None else _gather_rows(momentum.detach(), self.num_classes).cpu().clone()
        return {"format": FORMAT, "weight": weight, "momentum": rows}

    @torch.no_grad()
    def load_full_state(self, state, optimizer=None) -> None:
        if state.get("format") != FORMAT or tuple(state["weight"].shape) != (self.num_classes, self.in_features):
            raise ValueError("not a shardedhead state of this size")
        self.weight.copy_(state["weight"][self.start:self.end])
        record("load_full_state", start=self.start, end=self.end, weight_sum=float(self.weight.double().sum()))
        if optimizer is not None:
            optimizer.state[self.weight].clear()
            if state.get("momentum") is not None:
                optimizer.state[self.weight]["momentum_buffer"] = state["momentum"][self.start:self.end].clone()

    def state_params(self):
        record("state_params")
        return [self.weight]

    def clip_grad_norm_(self, others, max_norm: float) -> torch.Tensor:
        """The global norm: this shard's squared norm summed over the ranks, plus the replicated rest."""
        grads = [p.grad for p in others if p.grad is not None]
        device = self.weight.device
        own = (torch.zeros((), device=device) if self.weight.grad is None
               else self.weight.grad.detach().float().pow(2).sum())
        if self.world_size > 1:
            dist.all_reduce(own)  # every rank calls it, gradients or not
        rest = sum((g.detach().float().pow(2).sum().to(device) for g in grads), torch.zeros((), device=device))
        total = (own + rest).sqrt()
        coef = min(1.0, float(max_norm) / (float(total) + 1e-6))
        for g in grads + ([self.weight.grad] if self.weight.grad is not None else []):
            g.detach().mul_(coef)
        record("clip_grad_norm_", total=float(total))
        return total

    def state_bytes(self, optimizer=None) -> int:
        record("state_bytes")
        return default_state_bytes(self, optimizer)


def plan(num_classes: int, dim: int, nproc: int = 1, per_process_batch: int = 1,
         sample_rate: float = 1.0) -> HeadPlan:
    """The largest shard's centres, gradient and momentum; the step adds the ``[global batch,
    C]`` logits (gathered on every rank); FLOPs: one ``2 x D x C`` matmul per image over all ranks."""
    record("plan", num_classes=num_classes, nproc=nproc)
    start, end = rows_of(num_classes, nproc, 0)
    state = (end - start) * dim * 4 * 3
    return HeadPlan(state_bytes=state, step_bytes=state + 2 * per_process_batch * nproc * num_classes * 4,
                    flops_per_image=2 * dim * num_classes,
                    summary=f"{num_classes:,} classes x {dim} dims over {nproc} ranks")


@hookimpl
def register_heads(register):
    register("sharded", ShardedCosine, description="test head: class centres sharded over the ranks",
             params=("s", "seed"), plan=plan)
