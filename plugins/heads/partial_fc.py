"""Partial FC: a model-parallel, sampled margin head (An et al., arXiv 2010.05222).

For identity counts where a full fully-connected head does not fit on one card
(Glint360K, WebFace42M), the class centres are split across the ranks of the
process group and the margin softmax is computed across ranks:

* rank ``r`` holds a contiguous range of class centres, ``shard_range(C, W, r)``;
  the first ``C % W`` ranks hold one row more than the others;
* every rank all-gathers the (L2-normalised, fp32) embeddings and the labels of
  the whole global batch; the embedding gradient flows back to the rank that
  produced each embedding (an all-reduce in the backward pass);
* each rank computes the cosines of the global batch against its own centres
  (only the sampled ones, see below), applies the margin to the positive
  logits that fall in its shard, and the cross-entropy is formed with an
  all-reduce of the row maxima and one of the exponential sums (and target
  logits), so no rank ever holds more than ``[global batch, sampled]`` logits;
* sampling (``sample_rate < 1``, training mode only): each rank keeps every
  centre of its shard that is the label of some sample of the global batch,
  plus random negatives from its shard, so that it keeps
  ``num_sample = min(shard, max(1, ceil(sample_rate * shard)))`` centres; when
  there are more distinct positives than that, it keeps all positives and no
  negatives (so the sample is then larger than asked).  The negatives are drawn
  from a generator reseeded each step from ``(seed, step, rank)``: the sample is
  deterministic, and every rank runs the same logic.  ``last_sample`` holds the
  global class indices kept by this rank at the last step (sorted).

Forward contract (differs from the other heads): ``forward(embeddings, labels)``
returns the **loss** - a scalar, the mean cross-entropy over the global batch
(what data-parallel training with the ordinary head averages to) - not logits.
The class attribute ``computes_loss = True`` tells the trainer.  Every rank
returns the same value and must call ``forward`` and ``backward`` in step (they
contain collectives).  The margin is computed in fp32 with autocast off.

Gradients: the centre gradients are exact (the shard's rows of the full
gradient); centres are *not* data-parallel parameters and must be kept out of
DDP.  The embedding gradient on each rank is ``embedding_grad_scale`` times the
exact gradient of the global loss with respect to that rank's embeddings;
``None`` (the default) means ``world_size``, which compensates for DDP's
averaging of the backbone gradients, so that after DDP the backbone gradient
equals the single-process full-batch gradient.

With one process (or no process group) there are no collectives, and at
``sample_rate=1`` the loss is exactly ``F.cross_entropy`` of the ordinary head's
logits (the same operations in the same order).

Checkpoints that do not depend on the world size: :func:`full_state` gathers
the full centres ``[C, D]`` and the optimiser state of the centre parameter
(e.g. SGD momentum); :func:`load_full_state` re-shards them for the current
world size and rank.  ``load_state_dict`` also accepts a full ``[C, D]`` weight.

Memory planning: :func:`head_memory_bytes`, :func:`head_step_bytes`,
:func:`head_memory_message` and :func:`head_fit_error`; FLOPs of the sampled
matmul for MFU: :func:`head_forward_flops`.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from arcbench import hookimpl

from .margins import _autocast_off, arcface_target, combined_target, cosface_target

try:
    import torch.distributed as dist
except ImportError:  # pragma: no cover - torch built without distributed
    dist = None

MARGINS = ("arcface", "cosface", "combined")
STATE_FORMAT = "arcbench.partial_fc/1"
_INIT_BLOCK = 1 << 16  # rows per independently seeded block of the initial centres


# --------------------------------------------------------------- collectives
# Every collective of this module goes through these helpers.  They are called
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
            rows = (target_col >= 0).nonzero().squeeze(1)
            cols = target_col.index_select(0, rows)
            sums = torch.zeros(2, n, dtype=logits.dtype, device=logits.device)
            sums[0] = prob.sum(dim=1)
            sums[1].index_copy_(0, rows, logits[rows, cols] - row_max.index_select(0, rows))
            _all_reduce(sums, "sum", group)
            loss = (sums[0].log() - sums[1]).mean()
            prob.div_(sums[0].unsqueeze(1))
        ctx.save_for_backward(prob, rows, cols)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        prob, rows, cols = ctx.saved_tensors
        g = grad_loss / prob.shape[0]
        grad = prob * g
        grad[rows, cols] -= g
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
    At least every distinct positive of the shard is kept, see :class:`PartialFC`.
    """
    if sample_rate >= 1.0:
        return shard_size
    return min(shard_size, max(1, math.ceil(sample_rate * shard_size - 1e-6)))


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), the same on every platform."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


# --------------------------------------------------------------------- head

class PartialFC(nn.Module):
    """Sharded, sampled margin head; ``forward(embeddings, labels)`` returns the loss.

    Args:
        in_features: embedding size D.
        num_classes: total identities C (over all ranks); must be >= the world size.
        s: logit scale.
        margin: "arcface" (cos(theta + m)), "cosface" (cos(theta) - m) or
            "combined" (cos(m1 * theta + m2) - m3).
        m: the margin; default 0.5 for arcface, 0.35 for cosface; for combined it
            sets m2 when given.
        m1, m2, m3: the combined margin's parameters.
        easy_margin: ArcFace's easy-margin variant.
        sample_rate: fraction r of each shard's centres used per training step
            (positives always included); 1.0 means no sampling.
        seed: seeds the initial centres (identical for any world size) and the
            negative sampling.
        embedding_grad_scale: factor on the embedding gradient; None = world size
            (right under DDP, which averages backbone gradients); 1.0 = exact.
        process_group: the group the centres are sharded over; default the
            default group when one is initialised, otherwise a single process.
    """

    computes_loss = True
    #: the trainer keeps ``weight`` out of DDP, checkpoints it with :func:`full_state` (a collective
    #: on every rank) and clips gradients by the global norm (:func:`clip_grad_norm_`)
    sharded = True

    def __init__(self, in_features: int, num_classes: int, s: float = 64.0, margin: str = "arcface",
                 m: Optional[float] = None, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 easy_margin: bool = False, sample_rate: float = 1.0, seed: int = 0,
                 embedding_grad_scale: Optional[float] = None, process_group=None):
        super().__init__()
        if margin not in MARGINS:
            raise ValueError(f"unknown margin {margin!r}; known: {', '.join(MARGINS)}")
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.group = process_group
        self.world_size, self.rank = _world_and_rank(process_group)
        if num_classes < self.world_size:
            raise ValueError(f"{num_classes} classes cannot be sharded over {self.world_size} ranks")
        self.in_features, self.num_classes, self.s = int(in_features), int(num_classes), float(s)
        self.margin, self.easy_margin = margin, bool(easy_margin)
        if margin == "arcface":
            self.m = 0.5 if m is None else float(m)
        elif margin == "cosface":
            self.m = 0.35 if m is None else float(m)
        else:
            self.m = None
            m2 = m2 if m is None else m
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.sample_rate, self.seed = float(sample_rate), int(seed)
        self.embedding_grad_scale = (float(self.world_size) if embedding_grad_scale is None
                                     else float(embedding_grad_scale))
        self.start, self.end = shard_range(self.num_classes, self.world_size, self.rank)
        self.shard_size = self.end - self.start
        self.num_sample = num_sample(self.shard_size, self.sample_rate)
        self.weight = nn.Parameter(torch.empty(self.shard_size, self.in_features))
        self.reset_parameters()
        #: sampling steps taken so far (part of the state: resumes sample the same way)
        self.sample_step = 0
        #: global class indices this rank used at the last step (None: all of its shard)
        self.last_sample: Optional[torch.Tensor] = None
        self._generator = None

    # ------------------------------------------------------------- set-up
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform over the full [C, D] matrix, drawn in seeded blocks of rows,
        so that the centres are the same whatever the world size."""
        bound = math.sqrt(6.0 / (self.num_classes + self.in_features))
        first, last = self.start // _INIT_BLOCK, max(self.start, self.end - 1) // _INIT_BLOCK
        for block in range(first, last + 1):
            b0 = block * _INIT_BLOCK
            rows = min(_INIT_BLOCK, self.num_classes - b0)
            g = torch.Generator().manual_seed(_mix(self.seed, block, 0x1417))
            values = torch.rand(rows, self.in_features, generator=g).mul_(2 * bound).sub_(bound)
            lo, hi = max(self.start, b0), min(self.end, b0 + rows)
            if hi > lo:
                self.weight[lo - self.start:hi - self.start].copy_(values[lo - b0:hi - b0])

    def target_logit(self, cos_t: torch.Tensor) -> torch.Tensor:
        if self.margin == "arcface":
            return arcface_target(cos_t, self.m, self.easy_margin)
        if self.margin == "cosface":
            return cosface_target(cos_t, self.m)
        return combined_target(cos_t, self.m1, self.m2, self.m3)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, s={self.s}, "
                f"margin={self.margin}, sample_rate={self.sample_rate}, world_size={self.world_size}, "
                f"rank={self.rank}, shard=[{self.start}, {self.end})")

    def get_extra_state(self):
        return {"sample_step": self.sample_step, "num_classes": self.num_classes,
                "world_size": self.world_size, "rank": self.rank}

    def set_extra_state(self, state) -> None:
        if isinstance(state, dict) and "sample_step" in state:
            self.sample_step = int(state["sample_step"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A full [C, D] weight (world-size independent) is sliced to this rank's shard.
        key = prefix + "weight"
        w = state_dict.get(key)
        if (isinstance(w, torch.Tensor) and w.dim() == 2 and self.shard_size != self.num_classes
                and tuple(w.shape) == (self.num_classes, self.in_features)):
            state_dict = dict(state_dict)
            state_dict[key] = w[self.start:self.end]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ------------------------------------------------------------ sampling
    def _random_scores(self, device: torch.device) -> torch.Tensor:
        """Uniform [0, 1) scores for the shard's rows, from a generator seeded by (seed, step, rank).

        Drawn on the device when it has its own generator (the same seed then gives the same
        sample on the same kind of device), otherwise on the CPU."""
        seed = _mix(self.seed, self.sample_step, self.rank)
        if self._generator is not None and self._generator[0] == device:
            gen = self._generator[1]
            gen.manual_seed(seed)
            return torch.rand(self.shard_size, generator=gen, device=gen.device).to(device)
        try:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed)
            scores = torch.rand(self.shard_size, generator=gen, device=device)
        except (RuntimeError, TypeError):  # no generator on this device type: draw on the CPU
            gen = torch.Generator()
            gen.manual_seed(seed)
            scores = torch.rand(self.shard_size, generator=gen).to(device)
        self._generator = (device, gen)
        return scores

    def _sample(self, local_labels: torch.Tensor) -> Optional[torch.Tensor]:
        """Sorted shard-local indices of the centres used this step, or None for all.

        ``local_labels``: labels of the global batch that fall in this shard, minus ``start``.
        """
        if not self.training or self.num_sample >= self.shard_size:
            self.last_sample = None
            return None
        positives = torch.unique(local_labels)  # sorted
        if positives.numel() >= self.num_sample:
            index = positives
        else:
            scores = self._random_scores(self.weight.device)
            scores[positives] = 2.0  # above every uniform draw: positives always win
            index = scores.topk(self.num_sample, sorted=False).indices.sort().values
        self.sample_step += 1
        self.last_sample = index + self.start
        return index

    # ------------------------------------------------------------- forward
    def _margin_logits(self, cos: torch.Tensor, rows: Optional[torch.Tensor], cols: torch.Tensor):
        if rows is None:  # every row has its target here: the ordinary head's ops
            idx = cols.view(-1, 1)
            return cos.scatter(1, idx, self.target_logit(cos.gather(1, idx))) * self.s
        return cos.index_put((rows, cols), self.target_logit(cos[rows, cols])) * self.s

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with _autocast_off(embeddings):
            if self.world_size == 1:
                return self._forward_single(embeddings, labels)
            return self._forward_sharded(embeddings, labels)

    def _forward_single(self, embeddings, labels):
        labels = labels.long()
        index = self._sample(labels)
        weight = self.weight if index is None else self.weight.index_select(0, index)
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(weight.float())).clamp(-1.0, 1.0)
        target = labels if index is None else torch.searchsorted(index, labels)
        return F.cross_entropy(self._margin_logits(cos, None, target), target)

    def _forward_sharded(self, embeddings, labels):
        group = self.group
        x = F.normalize(embeddings.float())
        labels = labels.long().view(-1)
        # batch sizes may differ between ranks: pad to the largest for the gathers
        sizes = _all_gather(torch.tensor([x.shape[0]], dtype=torch.long, device=x.device), group).tolist()
        most = max(sizes)
        pad = most - x.shape[0]
        if pad:
            x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
            labels = torch.cat([labels, labels.new_full((pad,), -1)])
        all_x = _all_gather_with_grad(x, group, self.embedding_grad_scale)
        all_labels = _all_gather(labels, group)
        if any(n != most for n in sizes):
            keep = torch.cat([torch.arange(r * most, r * most + n, device=x.device) for r, n in enumerate(sizes)])
            all_x, all_labels = all_x.index_select(0, keep), all_labels.index_select(0, keep)

        # the same gathered labels on every rank: all ranks raise together
        if bool(((all_labels < 0) | (all_labels >= self.num_classes)).any()):
            bad = all_labels[(all_labels < 0) | (all_labels >= self.num_classes)][0].item()
            raise ValueError(f"partial_fc: label {bad} is out of range for {self.num_classes} classes")
        here = (all_labels >= self.start) & (all_labels < self.end)
        rows = here.nonzero().squeeze(1)
        local = all_labels.index_select(0, rows) - self.start
        index = self._sample(local)
        weight = self.weight if index is None else self.weight.index_select(0, index)
        cos = F.linear(all_x, F.normalize(weight.float())).clamp(-1.0, 1.0)  # [B, sampled]
        cols = local if index is None else torch.searchsorted(index, local)
        logits = self._margin_logits(cos, rows, cols)
        target_col = torch.full_like(all_labels, -1)
        target_col[rows] = cols
        return _ShardedSoftmaxCE.apply(logits, target_col, group)


# --------------------------------------------- world-size independent state

def _gather_rows(local: torch.Tensor, head: PartialFC, to_all: bool, chunk_rows: int):
    """The full [C, ...] tensor from every rank's shard rows, on the CPU; gathered in
    chunks of rows so the device never holds more than ``world x chunk`` rows.
    Returns None on ranks that do not receive it."""
    world, group = head.world_size, head.group
    sizes = [shard_range(head.num_classes, world, r) for r in range(world)]
    most = max(end - start for start, end in sizes)
    receive = to_all or head.rank == 0
    out = torch.empty((head.num_classes,) + tuple(local.shape[1:]), dtype=local.dtype) if receive else None
    for c0 in range(0, most, chunk_rows):
        c1 = min(most, c0 + chunk_rows)
        piece = local.new_zeros((c1 - c0,) + tuple(local.shape[1:]))
        mine = local[c0:c1]
        piece[:mine.shape[0]] = mine
        parts = (_all_gather(piece, group).chunk(world) if to_all else _gather_to_first(piece, group))
        if receive:
            for r, (start, end) in enumerate(sizes):
                n = max(0, min(c1, end - start) - c0)
                out[start + c0:start + c0 + n] = parts[r][:n].cpu()
    return out


def _param_state(head: PartialFC, optimizer) -> Dict[str, object]:
    if optimizer is None:
        return {}
    return dict(optimizer.state.get(head.weight, {}))


def full_state(head: PartialFC, optimizer: Optional[torch.optim.Optimizer] = None, to_all: bool = False,
               chunk_rows: int = _INIT_BLOCK) -> Optional[dict]:
    """The head's state independent of the world size, gathered on the CPU.

    A collective: every rank of the head's group must call it.  Returns the dict on
    rank 0 (on every rank with ``to_all=True``) and None on the others::

        {"format", "num_classes", "in_features", "sample_step",
         "weight": [C, D] tensor,
         "optimizer": {name: [C, D] tensor},   # per-row state of the centres, e.g. momentum_buffer
         "optimizer_scalars": {name: value}}   # e.g. Adam's step

    Optimiser entries are those of ``optimizer.state[head.weight]``; tensors of the
    weight's shape are gathered, the rest are copied from the local rank.
    """
    state = _param_state(head, optimizer)
    shape = tuple(head.weight.shape)
    row_names = sorted(k for k, v in state.items() if isinstance(v, torch.Tensor) and tuple(v.shape) == shape)
    if head.world_size > 1:  # ranks must agree on what they gather (e.g. no step taken yet on one)
        flags = _all_reduce(torch.tensor([len(row_names), -len(row_names)], device=head.weight.device),
                            "max", head.group).tolist()
        if flags[0] != -flags[1]:  # max != min: every rank sees it and raises
            raise RuntimeError("partial_fc: ranks disagree on the optimiser state of the centres")
    scalars = {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v)
               for k, v in state.items() if k not in row_names}
    if head.world_size == 1:
        weight = head.weight.detach().cpu().clone()
        rows = {k: state[k].detach().cpu().clone() for k in row_names}
    else:
        weight = _gather_rows(head.weight.detach(), head, to_all, chunk_rows)
        rows = {k: _gather_rows(state[k].detach(), head, to_all, chunk_rows) for k in row_names}
        if weight is None:
            return None
    return {"format": STATE_FORMAT, "num_classes": head.num_classes, "in_features": head.in_features,
            "sample_step": head.sample_step, "weight": weight, "optimizer": rows,
            "optimizer_scalars": scalars}


@torch.no_grad()
def load_full_state(head: PartialFC, state: dict, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Load a :func:`full_state` dict into ``head`` for its current world size and rank.

    No collectives: every rank reads the full state and keeps its rows.  With an
    ``optimizer`` (which must hold ``head.weight``), the centre parameter's state is
    replaced by the re-sharded rows (e.g. SGD's momentum_buffer); a state without
    optimiser entries clears it.
    """
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError("not a partial_fc full state (see full_state())")
    if (state["num_classes"], state["in_features"]) != (head.num_classes, head.in_features):
        raise ValueError(f"partial_fc state is {state['num_classes']} classes x {state['in_features']} dims; "
                         f"the head is {head.num_classes} x {head.in_features}")
    head.weight.copy_(state["weight"][head.start:head.end])
    head.sample_step = int(state.get("sample_step", 0))
    if optimizer is None:
        return
    if not any(p is head.weight for g in optimizer.param_groups for p in g["params"]):
        raise ValueError("the optimizer does not hold the head's weight")
    param_state = optimizer.state[head.weight]
    param_state.clear()
    for name, full in state.get("optimizer", {}).items():
        param_state[name] = full[head.start:head.end].to(device=head.weight.device).clone()
    for name, value in state.get("optimizer_scalars", {}).items():
        param_state[name] = value.clone() if isinstance(value, torch.Tensor) else value


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


def state_bytes(head: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """Bytes this rank holds for the head between steps: its parameters, their gradients
    and their optimiser state (e.g. SGD momentum) - what sharding divides by the world size."""
    total = 0
    for p in head.parameters():
        total += p.numel() * p.element_size()
        if p.grad is not None:
            total += p.grad.numel() * p.grad.element_size()
        if optimizer is not None:
            for v in optimizer.state.get(p, {}).values():
                if isinstance(v, torch.Tensor):
                    total += v.numel() * v.element_size()
    return int(total)


def optimizer_index(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> Optional[int]:
    """The key of ``param`` in ``optimizer.state_dict()["state"]`` (its position over all groups)."""
    i = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p is param:
                return i
            i += 1
    return None


# ----------------------------------------------------------- memory planning

def head_memory_bytes(num_classes: int, dim: int, world_size: int = 1, dtype_bytes: int = 4,
                      momentum: bool = True, grad: bool = False) -> int:
    """Bytes of the largest rank's centres (+ momentum, + gradient when asked)."""
    rows = -(-int(num_classes) // int(world_size))
    return rows * int(dim) * int(dtype_bytes) * (1 + bool(momentum) + bool(grad))


def head_step_bytes(num_classes: int, dim: int, world_size: int, global_batch: int, sample_rate: float = 1.0,
                    dtype_bytes: int = 4, momentum: bool = True) -> int:
    """A rough per-rank peak for one training step of the head alone: centres, gradient and
    momentum, the sampled centres and their normalised copy, and ~4 fp32 [B, sampled]
    buffers (cosines, margin logits, scaled logits, probabilities)."""
    rows = -(-int(num_classes) // int(world_size))
    k = num_sample(rows, sample_rate)
    params = head_memory_bytes(num_classes, dim, world_size, dtype_bytes, momentum, grad=True)
    return params + 2 * k * dim * 4 + 4 * int(global_batch) * k * 4


def head_forward_flops(global_batch: int, dim: int, num_classes: int, world_size: int = 1,
                       sample_rate: float = 1.0) -> int:
    """Multiply-add FLOPs (2 per MAC) of one rank's cosine matmul, [B, D] x [D, sampled], in the
    forward pass (the largest shard; positives beyond the sample size not counted).  The
    backward pass is about twice this (gradients of the embeddings and of the centres)."""
    rows = -(-int(num_classes) // int(world_size))
    return 2 * int(global_batch) * int(dim) * num_sample(rows, sample_rate)


def head_flops_per_image(dim: int, num_classes: int, world_size: int = 1, sample_rate: float = 1.0) -> int:
    """Forward FLOPs of the cosine matmul per image of the global batch, summed over the ranks:
    ``2 x D x`` the centres used in a step (every shard's sample).  For the full head this is
    ``2 x D x C``; the MFU convention then counts 3x for a training step."""
    used = sum(num_sample(end - start, sample_rate)
               for start, end in (shard_range(int(num_classes), int(world_size), r) for r in range(int(world_size))))
    return 2 * int(dim) * used


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def head_memory_message(num_classes: int, dim: int, world_size: int = 1, device_bytes: Optional[int] = None,
                        dtype_bytes: int = 4, momentum: bool = True) -> str:
    """One line, e.g. "2,000,000 classes x 512 dims = 8.2 GB per rank with momentum; the device has 16.0 GB"."""
    need = head_memory_bytes(num_classes, dim, world_size, dtype_bytes, momentum)
    over = f" over {world_size} ranks" if world_size > 1 else ""
    msg = (f"{int(num_classes):,} classes x {int(dim)} dims{over} = {_gb(need)} per rank "
           f"{'with' if momentum else 'without'} momentum")
    if device_bytes is not None:
        msg += f"; the device has {_gb(device_bytes)}"
    return msg


def head_fit_error(num_classes: int, dim: int, world_size: int, device_bytes: Optional[int],
                   dtype_bytes: int = 4, momentum: bool = True, fraction: float = 1.0) -> Optional[str]:
    """:func:`head_memory_message` when the head's state exceeds ``fraction`` of the device; else None."""
    if device_bytes is None:
        return None
    if head_memory_bytes(num_classes, dim, world_size, dtype_bytes, momentum) <= fraction * device_bytes:
        return None
    return head_memory_message(num_classes, dim, world_size, device_bytes, dtype_bytes, momentum)


@hookimpl
def register_heads(register):
    register("partial_fc", PartialFC,
             description="Partial FC: class centres sharded over ranks, sampled softmax (sample_rate); "
                         "margin=arcface|cosface|combined; forward returns the loss (computes_loss)",
             params=("s", "m", "margin", "sample_rate", "seed"))
