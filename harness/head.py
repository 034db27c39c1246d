"""The head contract: what the core asks of a margin head beyond ``forward``.

A head is the ``nn.Module`` a ``register_heads`` factory returns (see
:func:`arcbench.hookspecs.register_heads`).  An ordinary head needs nothing
more: ``forward(embeddings, labels)`` gives logits, every rank holds all of it,
and the core treats its parameters like the backbone's.  A head that is not
ordinary says so through optional class attributes and methods, which the
core reads only through the functions below (it never imports a head's
module):

* ``computes_loss = True``: ``forward`` returns the (fp32-able scalar) loss itself,
  not logits for ``F.cross_entropy`` (:func:`computes_loss`).
* ``sharded = True``: its parameters are split across the ranks of the process
  group.  It is then kept out of DDP, must be called in step on every rank, and
  must implement the three hooks that make that work:

  - ``full_state(optimizer) -> dict | None``: its state independent of the world
    size (every row of every shard, and the per-row optimiser state of
    :meth:`state_params`), gathered on the CPU.  A collective: every rank calls
    it; rank 0 gets the dict (others may get None).  It is saved in the training
    checkpoint in place of this rank's ``state_dict()`` (:func:`full_state`).
  - ``load_full_state(state, optimizer)``: load such a dict for the current world
    size and rank (re-sharding it), including the optimiser state of
    :meth:`state_params`; called after the optimiser's own ``load_state_dict``.
  - ``clip_grad_norm_(others, max_norm) -> Tensor``: clip the gradients of
    ``others`` (the replicated parameters, already all-reduced) and of its own
    parameters by the global norm, which needs the shards' squared norms summed
    over the ranks (:func:`clip_grad_norm_`).

* ``state_params() -> iterable of Parameters`` (sharded heads): the parameters whose
  optimiser state ``full_state`` carries, left out of the trainer's optimiser
  checkpoint.  Default: all of the head's parameters.
* ``state_bytes(optimizer) -> int``: what this rank holds for the head between
  steps; default :func:`default_state_bytes` (parameters, gradients, optimiser state).

The memory and FLOPs plan is needed before any head is built (a bench point that
cannot fit is skipped, FLOPs feed MFU), so it belongs to the registration, not the
module: ``register(name, factory, plan=...)``, a callable returning a
:class:`HeadPlan`; a head without one is planned as a full replicated matrix
(:func:`full_head_plan`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional

import torch
from torch import nn


# ------------------------------------------------------------------ the module's hooks

def computes_loss(head: nn.Module) -> bool:
    """``forward`` returns the loss itself (e.g. Partial FC), not logits for F.cross_entropy."""
    return bool(getattr(head, "computes_loss", False))


def is_sharded(head: nn.Module) -> bool:
    """The head's parameters are split across the ranks: kept out of DDP, checkpointed through
    :func:`full_state`, clipped by the global norm."""
    return bool(getattr(head, "sharded", False))


#: the hooks a sharded head cannot do without
SHARDED_HOOKS = ("full_state", "load_full_state", "clip_grad_norm_")


def missing_hooks(head: nn.Module) -> List[str]:
    """The :data:`SHARDED_HOOKS` a sharded head lacks (none for an ordinary head)."""
    if not is_sharded(head):
        return []
    return [name for name in SHARDED_HOOKS if not callable(getattr(head, name, None))]


def full_state(head: nn.Module, optimizer=None) -> Optional[dict]:
    """A sharded head's world-size independent state (a collective on every rank)."""
    return head.full_state(optimizer)


def load_full_state(head: nn.Module, state: dict, optimizer=None) -> None:
    """Load a :func:`full_state` dict, re-sharded for this run's world size and rank."""
    head.load_full_state(state, optimizer)


def state_params(head: nn.Module) -> List[nn.Parameter]:
    """The parameters whose optimiser state the head's full state holds."""
    hook = getattr(head, "state_params", None)
    return list(hook() if hook is not None else head.parameters())


def optimizer_indices(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> set:
    """The keys of ``params`` in ``optimizer.state_dict()["state"]`` (positions over all groups)."""
    wanted = {id(p) for p in params}
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    return {i for i, p in enumerate(flat) if id(p) in wanted}


def clip_grad_norm_(model: nn.Module, head: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the gradients of ``model`` (backbone and ``head``) by their global norm.  A head with
    its own ``clip_grad_norm_`` hook clips itself together with the rest of the model's parameters."""
    hook = getattr(head, "clip_grad_norm_", None)
    if hook is None:
        return nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    own = {id(p) for p in head.parameters()}
    return hook([p for p in model.parameters() if id(p) not in own], max_norm)


def default_state_bytes(head: nn.Module, optimizer=None) -> int:
    """Bytes this rank holds for the head between steps: its parameters, their gradients and
    their optimiser state (e.g. SGD momentum) - what sharding divides by the world size."""
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


def state_bytes(head: nn.Module, optimizer=None) -> int:
    """The head's ``state_bytes`` hook, or :func:`default_state_bytes`."""
    hook = getattr(head, "state_bytes", None)
    return int(hook(optimizer)) if hook is not None else default_state_bytes(head, optimizer)


# ------------------------------------------------------------------ the registration's plan

@dataclass(frozen=True)
class HeadPlan:
    """What a head will cost, planned before it is built (no tensors are made).

    ``state_bytes``: the largest process's parameters + gradient + optimiser state (fp32);
    ``step_bytes``: a rough per-process peak of one training step of the head alone;
    ``flops_per_image``: forward FLOPs of the head per image of the global batch, summed over
    the processes (a training step counts 3x); ``summary``: one line saying what the state
    is, e.g. "2,000,000 classes x 512 dims = 12.3 GB per rank with momentum"."""

    state_bytes: int
    step_bytes: int
    flops_per_image: int
    summary: str


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def full_head_plan(num_classes: int, dim: int, nproc: int = 1, per_process_batch: int = 1,
                   sample_rate: float = 1.0) -> HeadPlan:
    """The plan of an ordinary head: a full ``[C, D]`` fp32 matrix replicated on every process,
    with its gradient and momentum, and ~4 fp32 ``[batch, C]`` buffers per step."""
    c, d = int(num_classes), int(dim)
    state = c * d * 4 * 3
    step = state + 2 * c * d * 4 + 4 * int(per_process_batch) * c * 4
    return HeadPlan(state, step, 2 * d * c, f"{c:,} classes x {d} dims = {gigabytes(c * d * 4 * 2)} per rank "
                                            "with momentum")


def plan(spec, num_classes: int, dim: int, nproc: int = 1, per_process_batch: int = 1,
         sample_rate: float = 1.0) -> HeadPlan:
    """The plan of the registered head ``spec`` (:class:`arcbench.registry.HeadSpec`): its own
    ``plan`` callable, or :func:`full_head_plan`."""
    make: Callable = spec.plan or full_head_plan
    return make(num_classes=num_classes, dim=dim, nproc=nproc, per_process_batch=per_process_batch,
                sample_rate=sample_rate)
