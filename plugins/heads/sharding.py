"""How Partial FC spreads its class centres over the ranks, and the collectives it uses.

Kept apart from the head so that the memory plan (partial_fc_plan) and the
checkpoint helpers (partial_fc_state) can use the shard arithmetic without the
module, and so that every collective of the sharded head has one home: the head
and partial_fc_state call them as ``sharding._all_gather`` etc., looked up at call
time, so one patch of this module sees every collective
(tests/unit/plugins/test_partial_fc.py checks that all ranks issue the same ones).
:func:`clip_grad_norm_` is what the head's ``clip_grad_norm_`` hook runs.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

try:
    import torch.distributed as dist
except ImportError:  # pragma: no cover - torch built without distributed
    dist = None


# --------------------------------------------------------------- collectives
# Every collective of the sharded head goes through these helpers.  They are called
# in the same order with the same shapes on every rank (batches are padded).

def _dist_on() -> bool:
    return dist is not None and dist.is_available() and dist.is_initialized()


def _world_and_rank(group=None) -> Tuple[int, int]:
    if not _dist_on():
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _all_reduce(tensor: torch.Tensor, op: str = "sum", group=None) -> torch.Tensor:
    """In-place all-reduce; ``op`` is "sum" or "max"."""
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return tensor


def _all_gather(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenation along dim 0 of the equal-shaped tensors of all ranks (no gradient)."""
    world, _ = _world_and_rank(group)
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor.contiguous(), group=group)
    return torch.cat(out)


def _gather_to_first(tensor: torch.Tensor, group=None):
    """The equal-shaped tensors of all ranks, as a list on the group's first rank; None elsewhere."""
    world, rank = _world_and_rank(group)
    if group is None:
        dst = 0
    else:  # public since torch 2.0; the private name before
        get_global_rank = getattr(dist, "get_global_rank", None) or dist.distributed_c10d._get_global_rank
        dst = get_global_rank(group, 0)
    out = [torch.empty_like(tensor) for _ in range(world)] if rank == 0 else None
    dist.gather(tensor.contiguous(), out, dst=dst, group=group)
    return out


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; the backward pass sums the gradients of all ranks and
    returns this rank's slice (times ``scale``).  Uses all_reduce rather than
    reduce_scatter so that it runs on every backend (gloo has no reduce_scatter)."""

    @staticmethod
    def forward(ctx, x, group, scale):
        ctx.group, ctx.scale = group, scale
        ctx.world, ctx.rank = _world_and_rank(group)
        return _all_gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        grad = _all_reduce(grad.contiguous().clone(), "sum", ctx.group)
        n = grad.shape[0] // ctx.world
        gx = grad[ctx.rank * n:(ctx.rank + 1) * n]
        if ctx.scale != 1.0:
            gx = gx * ctx.scale
        return gx, None, None


def _all_gather_with_grad(x: torch.Tensor, group=None, scale: float = 1.0) -> torch.Tensor:
    return _AllGatherWithGrad.apply(x, group, float(scale))


class _ShardedSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of logits whose columns are split across ranks.

    ``logits`` [B, k] holds this rank's columns; ``target_col`` [B] the column of
    each row's label in them, or -1 when the label lives on another rank.  Two
    all-reduces (max; then sum of exponentials and target logits together).
    The backward pass is local: softmax minus one-hot, over the global batch size.
    """

    @staticmethod
    def forward(ctx, logits, target_col, group):
        with torch.no_grad():
            n = logits.shape[0]
            row_max = logits.max(dim=1).values
            _all_reduce(row_max, "max", group)
            prob = (logits - row_max.unsqueeze(1)).exp_()
            # masked gather, not nonzero(): the rows whose label is here, without a host sync
            has = (target_col >= 0).unsqueeze(1)
            cols = target_col.clamp(min=0).unsqueeze(1)
            sums = torch.zeros(2, n, dtype=logits.dtype, device=logits.device)
            sums[0] = prob.sum(dim=1)
            sums[1] = torch.where(has, logits.gather(1, cols) - row_max.unsqueeze(1), 0.0).squeeze(1)
            _all_reduce(sums, "sum", group)
            loss = (sums[0].log() - sums[1]).mean()
            prob.div_(sums[0].unsqueeze(1))
        ctx.save_for_backward(prob, has, cols)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        prob, has, cols = ctx.saved_tensors
        g = grad_loss / prob.shape[0]
        grad = prob * g
        grad.scatter_add_(1, cols, torch.where(has, -g, 0.0).to(grad.dtype))  # -g at each row's target here
        return grad, None, None


# ----------------------------------------------------------------- sharding

def shard_range(num_classes: int, world_size: int, rank: int) -> Tuple[int, int]:
    """``(start, end)`` of rank's contiguous class range; the first ``C % W`` ranks get one more."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def num_sample(shard_size: int, sample_rate: float) -> int:
    """Centres a rank keeps per step: ``ceil(sample_rate * shard)``, at least 1, at most the shard.

    (The product is taken to within 1e-6 so that 0.1 * 1,000,000 gives 100,000.)
    At least every distinct positive of the shard is kept, see ``partial_fc.PartialFC``.
    """
    if sample_rate >= 1.0:
        return shard_size
    return min(shard_size, max(1, math.ceil(sample_rate * shard_size - 1e-6)))


# ------------------------------------------------------------ training helpers

def clip_grad_norm_(replicated, sharded, max_norm: float, group=None) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over a model whose ``sharded`` parameters (the
    centres) are split across the ranks and whose ``replicated`` ones (the backbone, after
    DDP's all-reduce) are the same on every rank.

    The norm is the global one: the squared norms of the shards are summed with an
    all-reduce (a collective: every rank calls it, gradients or not), so every rank
    scales by the same factor and the result equals clipping the single-process model.
    Returns the total norm (before clipping)."""
    rep = [p.grad for p in replicated if p.grad is not None]
    sh = [p.grad for p in sharded if p.grad is not None]
    device = (rep + sh)[0].device if (rep or sh) else torch.device("cpu")

    def squares(grads):
        total = torch.zeros((), dtype=torch.float32, device=device)
        for g in grads:
            total = total + torch.linalg.vector_norm(g.detach(), 2, dtype=torch.float32).to(device) ** 2
        return total

    shard_sq = squares(sh)
    world, _ = _world_and_rank(group)
    if world > 1:
        shard_sq = _all_reduce(shard_sq, "sum", group)
    total = (squares(rep) + shard_sq).sqrt()
    coef = (float(max_norm) / (total + 1e-6)).clamp(max=1.0)
    for g in rep + sh:
        g.detach().mul_(coef.to(g.device, g.dtype))
    return total
