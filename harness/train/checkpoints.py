"""Training checkpoints: everything needed to continue a run exactly.

Saved atomically (``checkpoints/last.pt`` plus one per epoch) and loaded
with ``weights_only=True``: RNG states and numpy arrays are stored as plain
tensors and lists so no arbitrary unpickling is ever needed.
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


# ----------------------------------------------------------- a trainer's state

def save_checkpoint(tr, tag: Optional[str] = None) -> None:
    """Save a trainer's state: rank 0 writes ``last.pt`` (and ``<tag>.pt``), the other ranks their
    own RNG streams.  With a sharded head every rank must call this at the same step (the full
    state of the centres is gathered to rank 0 first)."""
    import sys

    head_full = None
    if tr.face.head_sharded:
        if tr.world_size > 1 and isinstance(sys.exc_info()[1], KeyboardInterrupt):
            # called by rank 0 alone while an interrupt unwinds: gathering the centres would wait
            # for ranks that are not there, so the last periodic checkpoint stays the one to resume
            if tr.is_main and not tr.cfg.recording.quiet:
                tr.log("arcbench: interrupted; the sharded head is checkpointed only at step "
                       "boundaries all processes reach (--checkpoint-steps), so the last one is kept")
            return
        head_full = head_contract.full_state(tr.face.head, tr.optimizer)  # a collective
    if not tr.is_main and tr.run_dir:
        save_rank_rng(tr.run_dir, tr.rank, tr.global_step, tr.device)
    if not (tr.is_main and tr.rec):
        return
    kwargs = dict(face_model=tr.face, head_full=head_full, optimizer=tr.optimizer, scheduler=tr.scheduler,
                  scaler=tr.scaler, epoch=tr.epoch, step_in_epoch=tr.step_in_epoch, global_step=tr.global_step,
                  best_accuracy=tr.best_accuracy, history=tr.history, device=tr.device, timing={
                      "data": torch.tensor(tr.data_times, dtype=torch.float64),
                      "compute": torch.tensor(tr.compute_times, dtype=torch.float64),
                      "host_wait": torch.tensor(tr.host_wait_times, dtype=torch.float64),
                      "samples": tr.samples}, epoch_loss=list(tr.epoch_loss))
    save(tr.rec.path("checkpoints", "last.pt"), **kwargs)
    if tag:
        save(tr.rec.path("checkpoints", f"{tag}.pt"), **kwargs)


def _load_head(tr, state: dict, path: str) -> None:
    face = unwrap(tr.face)
    head_full = state.get("head_full")
    if face.head_sharded != (head_full is not None):
        from ..errors import ArcbenchError

        raise ArcbenchError(f"the checkpoint's head ({'sharded' if head_full is not None else 'not sharded'}) "
                            f"does not match --head {tr.cfg.model.head}", path)
    if head_full is None:
        face.head.load_state_dict(state["head"])
    tr.optimizer.load_state_dict(state["optimizer"])
    if head_full is not None:
        # after the optimizer: re-shards the centres and their per-row state (momentum)
        # for this run's world size, whatever it was when saved
        head_contract.load_full_state(face.head, head_full, tr.optimizer)


def restore(tr, path: str) -> None:
    """Put a trainer back where the checkpoint left it: weights, optimiser, schedule, position,
    history, timed steps so far, and this rank's RNG streams (applied after the data skip)."""
    tdev = tr.device.torch_device()
    # straight onto this process's card (torch.load knows no host index: "cpu" for the host)
    state = load(path, map_location=tdev if tdev.type != "cpu" else "cpu")
    unwrap(tr.face).backbone.load_state_dict(state["backbone"])
    _load_head(tr, state, path)
    tr.scheduler.load_state_dict(state["scheduler"])
    tr.scaler.load_state_dict(state["scaler"])
    tr.epoch, tr.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
    tr.global_step = int(state["global_step"])
    tr.best_accuracy = state.get("best_accuracy")
    tr.history = state.get("history") or tr.history
    tr.epoch_loss = list(state.get("epoch_loss") or [0.0, 0])  # the epoch's running loss so far
    own = load_rank_rng(tr.run_dir, tr.rank, tr.global_step)
    if own is not None:  # this rank's own RNG streams, not rank 0's
        state["rng"] = own
    tr.resume_rng = state["rng"]
    timing = state.get("timing") or {}
    if "data" in timing:  # the timed steps of earlier segments (rank 0's; DDP ranks step in lock-step)
        tr.data_times = timing["data"].tolist()
        tr.compute_times = timing["compute"].tolist()
        tr.host_wait_times = timing["host_wait"].tolist() if "host_wait" in timing else []
        tr.samples = int(timing.get("samples", 0))
    set_rng_state(state["rng"], tr.device)


def export_backbone(tr) -> Optional[str]:
    """``backbone.pth``: the trained backbone's plain state dict, for ``eval``/``verify``."""
    if not (tr.is_main and tr.rec):
        return None
    path = tr.rec.path("backbone.pth")
    atomic.torch_save(unwrap(tr.face).backbone.state_dict(), path)
    return path
