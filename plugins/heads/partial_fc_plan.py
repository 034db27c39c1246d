"""Memory and FLOPs of the Partial FC head, planned before a run (no tensors are made).

:func:`plan` is the head's registered plan (the head contract, :mod:`arcbench.head`):
the bench asks it whether a (classes, sample rate, processes) point fits on the
device, and for the head's share of the FLOPs behind MFU.
"""
from __future__ import annotations

from typing import Optional

from arcbench.head import HeadPlan

from .sharding import num_sample, shard_range


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


def plan(num_classes: int, dim: int, nproc: int = 1, per_process_batch: int = 1,
         sample_rate: float = 1.0) -> HeadPlan:
    """The head's plan at ``nproc`` processes: the largest shard's centres, gradient and momentum;
    one step over the global batch (every rank sees all of it) with ``sample_rate`` of each shard."""
    global_batch = int(per_process_batch) * int(nproc)
    return HeadPlan(state_bytes=head_memory_bytes(num_classes, dim, nproc, grad=True),
                    step_bytes=head_step_bytes(num_classes, dim, nproc, global_batch, sample_rate),
                    flops_per_image=head_flops_per_image(dim, num_classes, nproc, sample_rate),
                    summary=head_memory_message(num_classes, dim, nproc))
