"""Training checkpoints on disk: the format, the RNG streams, and where they lie.

What goes in and comes back out is the business of
:class:`arcbench.train.checkpointer.Checkpointer`.  Saved atomically
(``checkpoints/last.pt`` plus one per epoch) and loaded with
``weights_only=True``: RNG states and numpy arrays are stored as plain tensors
and lists so no arbitrary unpickling is ever needed.
"""
from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import torch

from .. import head as head_contract
from ..record import atomic
from ..inference.weights import load_file

FORMAT = "arcbench-train-v1"


def rng_state(device=None) -> dict:
    """Host RNG states, and the device's (``torch.cuda``/``torch.sdaa`` ...) when it has one."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _tuple_to_list(random.getstate()),
        "numpy": {"key": np_state[0], "array": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }
    dev_state = device.rng_state() if device is not None else None
    if dev_state is not None:
        state["device"] = {"name": device.name, "states": list(dev_state)}
    return state


def set_rng_state(state: dict, device=None) -> None:
    torch.set_rng_state(state["torch"].cpu())  # checkpoints load onto the card (map_location)
    random.setstate(_list_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["array"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    saved = state.get("device")
    if device is not None and saved and saved.get("name") == device.name:
        device.set_rng_state([s.cpu() for s in saved["states"]])


def _tuple_to_list(x):
    return [_tuple_to_list(v) for v in x] if isinstance(x, (tuple, list)) else x


def _list_to_tuple(x):
    return tuple(_list_to_tuple(v) for v in x) if isinstance(x, (tuple, list)) else x


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        else:
            return module


def save(path: str, *, face_model, optimizer, scheduler, scaler, epoch: int, step_in_epoch: int,
         global_step: int, best_accuracy: Optional[float], history: dict, device=None,
         head_full: Optional[dict] = None, timing: Optional[dict] = None,
         epoch_loss: Optional[list] = None) -> None:
    """``head_full``: a sharded head's world-size independent state (its ``full_state`` hook,
    :mod:`arcbench.head`), stored instead of this rank's shard; the optimiser state of the head's
    ``state_params`` lives in it, so it is left out of ``optimizer``.  ``timing``: the per-step
    data/compute seconds timed so far and the samples seen, so a resumed run's summary
    covers the whole run, not only its last segment."""
    face = unwrap(face_model)
    opt_state = optimizer.state_dict()
    if head_full is not None:
        own = head_contract.optimizer_indices(optimizer, head_contract.state_params(face.head))
        opt_state["state"] = {k: v for k, v in opt_state["state"].items() if k not in own}
    atomic.torch_save({
        "format": FORMAT,
        "backbone": face.backbone.state_dict(),
        "head": None if head_full is not None else face.head.state_dict(),
        "head_full": head_full,
        "optimizer": opt_state,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "best_accuracy": best_accuracy,
        "history": history,
        "rng": rng_state(device),
        "timing": timing or {},
        "epoch_loss": epoch_loss or [0.0, 0],
    }, path)


def load(path: str, map_location="cpu") -> dict:
    state = load_file(path, map_location=map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        from ..errors import ArcbenchError

        raise ArcbenchError("not an arcbench training checkpoint", path)
    return state


def _rank_rng_path(run_dir: str, rank: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"rng.rank{rank}.pt")


def save_rank_rng(run_dir: str, rank: int, global_step: int, device=None) -> None:
    """A rank other than 0 keeps its own RNG streams beside rank 0's checkpoint (same node only)."""
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    atomic.torch_save({"format": FORMAT, "global_step": int(global_step), "rng": rng_state(device)},
                      _rank_rng_path(run_dir, rank))


def load_rank_rng(run_dir: Optional[str], rank: int, global_step: int) -> Optional[dict]:
    """This rank's RNG state saved at ``global_step``, or None (rank 0, another node, or a stale file)."""
    if not run_dir or rank == 0:
        return None
    path = _rank_rng_path(run_dir, rank)
    if not os.path.exists(path):
        return None
    state = load_file(path)
    if not isinstance(state, dict) or state.get("global_step") != int(global_step):
        return None
    return state["rng"]


def latest(run_dir: str) -> Optional[str]:
    path = os.path.join(run_dir, "checkpoints", "last.pt")
    return path if os.path.exists(path) else None


def saved_progress(run_dir: str) -> dict:
    """Steps, epochs and last loss of the run's latest checkpoint: what a run whose workers could
    not report (they were stopped or failed in their own processes) has kept, and resumes from."""
    path = latest(run_dir)
    if path is None:
        return {}
    try:
        state = load(path)
    except Exception:  # a damaged checkpoint: nothing to report, the resume will say why
        return {}
    losses = (state.get("history") or {}).get("loss") or []
    return {"steps": int(state["global_step"]), "epochs": int(state["epoch"]),
            "final_loss": float(losses[-1][1]) if losses else None}
