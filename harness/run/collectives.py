"""Every collective the harness calls, in one place.

Rules that keep multi-process runs from hanging:

* every rank calls every collective here, in the same order, whatever data it
  holds (a rank with nothing to contribute sends an empty share);
* before each one, the ranks meet at a ``monitored_barrier`` (on a gloo side
  group, whatever the main backend) with a bounded wait, so a
  rank that never arrives is named within seconds, with the collective's name,
  instead of surfacing as a 300 s timeout blamed on the wrong rank;
* buffers live where the backend needs them: on the bound card for nccl/tccl,
  on the host for gloo (:meth:`arcbench.device.Device.collective_device`).

``ARCBENCH_COLLECTIVE_LOG=DIR`` appends each call (sequence number, operation,
name) to ``DIR/rank<R>.jsonl``, so tests can check that the sequences agree.
DDP's own gradient all-reduces are not routed here.
"""
from __future__ import annotations

import datetime
import json
import os
import re
from typing import List, Optional

import torch

from ..errors import ArcbenchError

LOG_ENV = "ARCBENCH_COLLECTIVE_LOG"

#: default seconds a rank waits at a collective for the others to arrive: the work between
#: two collectives is split evenly over ranks, so this bounds their skew, not their work
DEFAULT_WAIT = 120.0


class _State:
    device = None
    rank = 0
    world_size = 1
    wait = DEFAULT_WAIT
    side_group = None
    seq = 0
    log_path: Optional[str] = None


_s = _State()


def setup(device, rank: int, world_size: int, *, timeout: float = 300.0, wait: float = DEFAULT_WAIT) -> None:
    """Join the process group (when ``world_size > 1``) and reset the call sequence.

    ``timeout`` is the process group's own limit (DDP's all-reduces wait under
    it); ``wait`` bounds how long a rank waits at a harness collective.
    """
    _s.device, _s.rank, _s.world_size, _s.wait = device, int(rank), int(world_size), float(wait)
    _s.seq, _s.side_group = 0, None
    log_dir = os.environ.get(LOG_ENV)
    _s.log_path = os.path.join(log_dir, f"rank{_s.rank}.jsonl") if log_dir else None
    if world_size <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        limit = datetime.timedelta(seconds=timeout)
        store = _attempt_store(world_size, limit)
        if store is None:
            dist.init_process_group(backend=device.dist_backend, timeout=limit)
        else:
            dist.init_process_group(backend=device.dist_backend, timeout=limit, store=store, rank=int(rank),
                                    world_size=int(world_size))
    # monitored_barrier exists only on gloo, and its point-to-point messages must not share a
    # channel with the data collectives (gloo then mixes up their sizes): it gets its own group
    _s.side_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))


def _attempt_store(world_size: int, timeout):
    """Under torch's elastic agent, the agent's store seen through this attempt's own prefix.

    The agent keeps one store across restarts: a restarted attempt would read the addresses the
    failed attempt's groups left there (gloo then dials a dead rank).  None: not under the agent."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    import torch.distributed as dist

    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(world_size),
                         is_master=False, timeout=timeout)
    return dist.PrefixStore(f"arcbench/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", base)


def teardown() -> None:
    if _s.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _s.device, _s.world_size, _s.side_group = None, 1, None


def world_size() -> int:
    return _s.world_size


def rank() -> int:
    return _s.rank


def _enter(op: str, name: str, **info) -> None:
    """Record the call, then wait (bounded) until every rank has reached it."""
    _s.seq += 1
    if _s.log_path:
        with open(_s.log_path, "a") as fh:
            fh.write(json.dumps({"seq": _s.seq, "op": op, "name": name, **info}) + "\n")
    if _s.world_size <= 1:
        return
    import torch.distributed as dist

    try:
        dist.monitored_barrier(group=_s.side_group, timeout=datetime.timedelta(seconds=_s.wait),
                               wait_all_ranks=True)
    except RuntimeError as exc:
        raise ArcbenchError(_late_message(name, _s.seq, str(exc))) from None


def _late_message(name: str, seq: int, text: str) -> str:
    """One line naming the collective and the ranks that did not arrive."""
    found = re.search(r"[Rr]anks?\s+([\d,\s]+?)\s+failed to pass", text)
    wait = f"{_s.wait:g} s"
    if found:
        ranks = ", ".join(r.strip() for r in found.group(1).split(",") if r.strip())
        return f"collective {name!r} (call {seq}): rank {ranks} did not arrive within {wait}"
    first = (text.strip().splitlines() or ["no answer"])[0][:200]
    return f"collective {name!r} (call {seq}): rank 0 did not answer within {wait} ({first})"


def barrier(name: str) -> None:
    """Every rank waits here until all have arrived."""
    _enter("barrier", name)


def all_gather(name: str, values: torch.Tensor) -> List[torch.Tensor]:
    """Each rank's ``values`` (same shape and dtype on every rank), on the host, in rank order."""
    _enter("all_gather", name, shape=list(values.shape))
    if _s.world_size <= 1:
        return [values.detach().cpu()]
    import torch.distributed as dist

    t = values.detach().to(_s.device.collective_device()).contiguous()
    out = [torch.empty_like(t) for _ in range(_s.world_size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def all_gather_rows(name: str, rows: Optional[torch.Tensor]) -> List[torch.Tensor]:
    """Each rank's ``rows`` (float32, ``(n_r, D)``; ``n_r`` may be 0 or ``rows`` None), on the host.

    Two collectives on every rank: the shapes first, then the rows padded to
    the longest share, so a rank with nothing to contribute still takes part.
    """
    n, width = (0, 0) if rows is None else (int(rows.shape[0]), int(rows.shape[1]))
    shapes = torch.stack(all_gather(f"{name}.shapes", torch.tensor([n, width], dtype=torch.int64)))
    longest, width = int(shapes[:, 0].max()), int(shapes[:, 1].max())
    padded = torch.zeros((longest, width), dtype=torch.float32)
    if n:
        padded[:n] = rows.detach().float().cpu()
    shares = all_gather(name, padded)
    return [share[: int(count)] for share, count in zip(shares, shapes[:, 0].tolist())]


def all_gather_json(name: str, obj) -> list:
    """Each rank's small JSON-able ``obj`` (a start-up error, the run directory), in rank order.

    On the gloo side group with host tensors, so it works before this process's card is bound
    (JSON, not pickle: nothing received is unpickled)."""
    data = json.dumps(obj).encode()
    _enter("all_gather_json", name)
    if _s.world_size <= 1:
        return [obj]
    import torch.distributed as dist

    size = torch.tensor([len(data)], dtype=torch.int64)
    sizes = [torch.empty_like(size) for _ in range(_s.world_size)]
    dist.all_gather(sizes, size, group=_s.side_group)
    longest = int(max(int(s) for s in sizes))
    buf = torch.zeros(longest, dtype=torch.uint8)
    buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    shares = [torch.empty_like(buf) for _ in range(_s.world_size)]
    dist.all_gather(shares, buf, group=_s.side_group)
    return [json.loads(bytes(share[:int(n)].tolist()).decode()) for share, n in zip(shares, sizes)]


def broadcast_buffers(name: str, module: torch.nn.Module) -> None:
    """Overwrite every rank's floating-point buffers of ``module`` (BatchNorm running statistics) with
    rank 0's, in place.  DDP here runs with ``broadcast_buffers=False``, so the ranks' statistics
    drift apart; sharded verification must embed with exactly the weights rank 0 exports."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    _enter("broadcast", name, tensors=len(buffers))
    if _s.world_size <= 1 or not buffers:
        return
    import torch.distributed as dist

    where = _s.device.collective_device()
    with torch.no_grad():
        flat = torch.cat([b.detach().reshape(-1).to(where, torch.float64) for b in buffers])
        dist.broadcast(flat, src=0)
        offset = 0
        for b in buffers:
            b.copy_(flat[offset:offset + b.numel()].view_as(b).to(b.device, b.dtype))
            offset += b.numel()
