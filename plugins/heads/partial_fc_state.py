"""World-size independent checkpoints of the Partial FC head.

:func:`full_state` gathers the full centres ``[C, D]`` and the optimiser state of
the centre parameter (e.g. SGD momentum); :func:`load_full_state` re-shards them
for the current world size and rank, so a run can resume on another number of
processes.  The head's ``full_state`` / ``load_full_state`` hooks (the head
contract, :mod:`arcbench.head`) call these; the trainer never imports them.
Takes the head as its argument and does not import its module, so the head can
import this one.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from . import sharding
from .sharding import shard_range

STATE_FORMAT = "arcbench.partial_fc/1"
#: rows per gather chunk (the same blocks the initial centres are drawn in)
_CHUNK_ROWS = 1 << 16


def _gather_rows(local: torch.Tensor, head: "PartialFC", to_all: bool, chunk_rows: int):
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
        parts = (sharding._all_gather(piece, group).chunk(world) if to_all
                 else sharding._gather_to_first(piece, group))
        if receive:
            for r, (start, end) in enumerate(sizes):
                n = max(0, min(c1, end - start) - c0)
                out[start + c0:start + c0 + n] = parts[r][:n].cpu()
    return out


def _param_state(head: "PartialFC", optimizer) -> Dict[str, object]:
    if optimizer is None:
        return {}
    return dict(optimizer.state.get(head.weight, {}))


def full_state(head: "PartialFC", optimizer: Optional[torch.optim.Optimizer] = None, to_all: bool = False,
               chunk_rows: int = _CHUNK_ROWS) -> Optional[dict]:
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
        counts = torch.tensor([len(row_names), -len(row_names)], device=head.weight.device)
        flags = sharding._all_reduce(counts, "max", head.group).tolist()
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
def load_full_state(head: "PartialFC", state: dict, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
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

