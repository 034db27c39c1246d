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
The class attribute ``computes_loss = True`` tells the trainer (the head contract,
:mod:`arcbench.head`).  Every rank
returns the same value and must call ``forward`` and ``backward`` in step (they
contain collectives).  Under autocast the cosine matmul runs in the autocast dtype;
everything else (normalisation, margin, softmax) in fp32 with autocast off.

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

Host syncs per training step (the loop itself has none outside its flush):

* sampled (``sample_rate < 1``): ``torch.unique`` of the shard's labels and the
  ``numel()`` that decides whether the positives already fill the sample: the
  number of centres kept is data-dependent, so the host must see it (1 sync);
* sharded: the all-gathered per-rank batch sizes (``.tolist()``: 1 sync and 1
  small collective).  The built-in loaders now hand every rank full batches (a
  batch that bad images thinned is refilled), so the sizes are always equal;
  the gather stays as the guard for a loader that does not refill, because
  equal-shape collectives on unequal batches would hang.  Dropping it needs a
  loader contract ("constant batch") the head can trust;
  the label range check ``bool(any())`` (1 sync; the same on every rank, so all
  raise together rather than one rank hanging in the next collective); and the
  ``nonzero()`` of the global-batch rows whose label is in this shard (its
  length is data-dependent: 1 sync);
* the sharded cross-entropy (:mod:`sharding`) needs none: it uses a masked
  gather instead of ``nonzero()``.

The head implements the optional hooks of the head contract (:mod:`arcbench.head`):
``sharded``, ``full_state`` / ``load_full_state`` (checkpoints that do not depend on
the world size, in :mod:`partial_fc_state`), ``state_params`` and
``clip_grad_norm_`` (the global norm, in :mod:`sharding`); its memory and FLOPs plan
(:mod:`partial_fc_plan`) is registered with it.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from arcbench import hookimpl

from . import partial_fc_plan, partial_fc_state, sharding
from .margins import _autocast_off, arcface_target, autocast_dtype, combined_target, cosface_target, cosine_matmul
from .sharding import _ShardedSoftmaxCE, _world_and_rank, num_sample, shard_range

MARGINS = ("arcface", "cosface", "combined")
_INIT_BLOCK = 1 << 16  # rows per independently seeded block of the initial centres


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
    #: the trainer keeps ``weight`` out of DDP, checkpoints it with :meth:`full_state` (a collective
    #: on every rank) and clips gradients by the global norm (:meth:`clip_grad_norm_`)
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

    # ------------------------------------------------- the head contract's hooks
    def full_state(self, optimizer=None) -> Optional[dict]:
        """The centres and their optimiser state, independent of the world size (a collective):
        :func:`partial_fc_state.full_state`."""
        return partial_fc_state.full_state(self, optimizer)

    def load_full_state(self, state: dict, optimizer=None) -> None:
        """:func:`partial_fc_state.load_full_state`: re-shards for this world size and rank."""
        partial_fc_state.load_full_state(self, state, optimizer)

    def state_params(self):
        """The centres: their optimiser state (e.g. momentum) rides in :meth:`full_state`."""
        return [self.weight]

    def clip_grad_norm_(self, others, max_norm: float) -> torch.Tensor:
        """Clip ``others`` (replicated) and the centres by the global norm over the ranks."""
        return sharding.clip_grad_norm_(others, self.parameters(), max_norm, self.group)

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
        dtype = autocast_dtype(embeddings)  # the caller's AMP dtype: only the cosine matmul runs in it
        with _autocast_off(embeddings):
            if self.world_size == 1:
                return self._forward_single(embeddings, labels, dtype)
            return self._forward_sharded(embeddings, labels, dtype)

    def _forward_single(self, embeddings, labels, dtype=None):
        labels = labels.long()
        index = self._sample(labels)
        weight = self.weight if index is None else self.weight.index_select(0, index)
        cos = cosine_matmul(F.normalize(embeddings.float()), F.normalize(weight.float()), dtype).clamp(-1.0, 1.0)
        target = labels if index is None else torch.searchsorted(index, labels)
        return F.cross_entropy(self._margin_logits(cos, None, target), target)

    def _forward_sharded(self, embeddings, labels, dtype=None):
        group = self.group
        x = F.normalize(embeddings.float())
        labels = labels.long().view(-1)
        # batch sizes may differ between ranks: pad to the largest for the gathers
        sizes = sharding._all_gather(torch.tensor([x.shape[0]], dtype=torch.long, device=x.device), group).tolist()
        most = max(sizes)
        pad = most - x.shape[0]
        if pad:
            x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
            labels = torch.cat([labels, labels.new_full((pad,), -1)])
        all_x = sharding._all_gather_with_grad(x, group, self.embedding_grad_scale)
        all_labels = sharding._all_gather(labels, group)
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
        cos = cosine_matmul(all_x, F.normalize(weight.float()), dtype).clamp(-1.0, 1.0)  # [B, sampled]
        cols = local if index is None else torch.searchsorted(index, local)
        logits = self._margin_logits(cos, rows, cols)
        target_col = torch.full_like(all_labels, -1)
        target_col[rows] = cols
        return _ShardedSoftmaxCE.apply(logits, target_col, group)


@hookimpl
def register_heads(register):
    register("partial_fc", PartialFC,
             description="Partial FC: class centres sharded over ranks, sampled softmax (sample_rate); "
                         "margin=arcface|cosface|combined; forward returns the loss (computes_loss)",
             params=("s", "m", "margin", "sample_rate", "seed"), plan=partial_fc_plan.plan)
