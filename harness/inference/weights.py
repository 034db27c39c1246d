"""A backbone's weight files: read safely, matched to the backbone, and folded for embedding.

Every load uses ``torch.load(..., weights_only=True)``: a checkpoint is data,
and a file that needs arbitrary unpickling is refused with a message rather
than executed.  Accepted layouts: a bare state dict; keys prefixed with
``arcface.``, ``module.`` or ``backbone.`` (reference, DDP, insightface); and
arcbench's own training checkpoints (``{"backbone": ..., "head": ...}``).  (A run's own
training checkpoints, with optimiser and progress, are :mod:`arcbench.train.checkpoints`.)
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Dict, Mapping

import torch

from ..errors import ArcbenchError

PREFIXES = ("module.", "arcface.", "backbone.", "_orig_mod.")


def load_file(path, map_location="cpu") -> dict:
    """``torch.load`` with ``weights_only=True`` and one-line errors."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ArcbenchError("checkpoint not found", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ArcbenchError(_unpickling_message(str(exc)), path) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, UnicodeDecodeError, MemoryError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ArcbenchError(f"cannot read checkpoint (truncated, corrupt or not a PyTorch file): {detail}",
                            path) from None


_GLOBAL = re.compile(r"(?:GLOBAL|Unsupported class)\s+([A-Za-z_][\w.]*)")


def _unpickling_message(text: str) -> str:
    """torch's weights_only refusal, in one line that says what the file wanted."""
    found = _GLOBAL.search(text)
    if found:
        return (f"refusing to load: the file references {found.group(1)}, which a plain-tensor load "
                "(weights_only=True) does not allow because unpickling it could run code. If you trust the "
                "file, re-save its state_dict: torch.save(model.state_dict(), path)")
    marker = "WeightsUnpickler error:"
    rest = text[text.index(marker) + len(marker):] if marker in text else text
    lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
    detail = lines[0] if lines else ""
    return f"cannot read checkpoint (corrupt, truncated or not a PyTorch file): {detail[:200]}"


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DDP ``module.``, reference ``arcface.`` ...) from every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def _candidates(state: Mapping[str, torch.Tensor]):
    """Ways to read ``state`` as a backbone: as is, all prefixes stripped, or only the keys
    under one prefix (a reference training checkpoint also holds ``head.weight``)."""
    yield dict(state)
    yield strip_prefixes(state)
    for p in PREFIXES:
        sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        if sub:
            yield strip_prefixes(sub)


def backbone_state(obj, path="", expected_keys=None) -> Dict[str, torch.Tensor]:
    """The backbone's state dict out of any accepted checkpoint layout.

    With ``expected_keys`` (the model's own keys) the reading that matches most
    of them wins, so a model whose real keys start with e.g. ``backbone.`` is
    not broken by prefix stripping.
    """
    if isinstance(obj, dict):
        for key in ("backbone", "model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArcbenchError("not a state dict of tensors (nor an arcbench checkpoint)", path)
    if expected_keys is None:
        return strip_prefixes(obj)
    expected = set(expected_keys)
    best, best_score = None, (-1, 0)
    for cand in _candidates(obj):
        hits = len(expected.intersection(cand))
        score = (hits, -len(cand))  # most matches, then fewest leftovers
        if score > best_score:
            best, best_score = cand, score
    return best


def load_backbone_weights(model: torch.nn.Module, path) -> None:
    """Strict load into ``model``; a mismatch lists the missing, unexpected and misshaped keys."""
    own = model.state_dict()
    state = backbone_state(load_file(path), path, expected_keys=own.keys())
    # Older checkpoints lack BatchNorm's num_batches_tracked; it does not affect inference.
    for k in own:
        if k not in state and k.endswith("num_batches_tracked"):
            state[k] = own[k]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                 for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        def brief(items):
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {brief(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {brief(unexpected)}")
        if misshaped:
            parts.append(f"shape mismatch: {brief(misshaped)}")
        raise ArcbenchError(f"weights do not match {type(model).__name__}: " + "; ".join(parts), path)
    model.load_state_dict(state, strict=True)


def load_backbone(name: str, weights=None, **kwargs) -> torch.nn.Module:
    """Create a registered backbone and (optionally) load weights into it."""
    from ..registry import create_backbone

    model = create_backbone(name, **kwargs)
    if weights:
        load_backbone_weights(model, weights)
    return model


def inference_model(model: torch.nn.Module, channels_last: bool = True,
                    fold_bn: bool = False) -> torch.nn.Module:
    """The module to embed with: a copy with every conv->BatchNorm pair folded into the conv.

    In eval mode a BatchNorm is an affine map, so folding it into the preceding
    convolution gives the same embeddings (to float rounding, ~1e-6) for roughly
    half the memory traffic; with channels_last this doubles CPU embedding speed
    (see docs/PERFORMANCE.md).  The caller's model is never modified.  Callers pass
    the backbone spec's ``fold_bn``: only its plugin knows that ``forward`` keeps no
    Python state a traced copy would not update.  Without ``fold_bn``, or if tracing
    fails, the model itself is returned (the caller handles its mode and memory format).
    """
    if not fold_bn:
        return model
    try:
        from torch.fx.experimental.optimization import fuse
    except ImportError:  # pragma: no cover - very old torch
        return model
    was_training = model.training
    model.eval()  # folding uses the running statistics
    try:
        fast = fuse(model, inplace=False)
    except Exception:
        return model
    finally:
        model.train(was_training)
    fast.eval()
    for attr in ("input_size", "embedding_size"):
        if hasattr(model, attr) and not hasattr(fast, attr):
            setattr(fast, attr, getattr(model, attr))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast
