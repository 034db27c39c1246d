"""The name a run records for its training and verification sets, the same in every state of the
run (running, interrupted, completed): a generated set is named by what its ``synth.json``
records, else by its folder, so two different ``data synth`` sets never read as one."""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple

from .synth import SYNTHETIC_FACES, synth_root
from .verification_set import default_name

#: the embedded default set lives in the cache under a key name (``synthfaces-v3-<digest>``)
_CACHE_PREFIX = "synthfaces-v"
HELD_OUT = " (held-out identities)"


def generated_set_name(path: Optional[str]) -> Optional[str]:
    """The name of the generated set ``path`` belongs to (None when it is not one)."""
    root = synth_root(path)
    if root is None:
        return None
    try:
        with open(os.path.join(root, "synth.json"), encoding="utf-8") as fh:
            recorded = json.load(fh).get("name")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and recorded.strip():
        return recorded.strip()
    folder = os.path.basename(os.path.normpath(os.path.abspath(root)))
    return SYNTHETIC_FACES if not folder or folder.startswith(_CACHE_PREFIX) else folder


def train_set_name(train_data: Optional[str]) -> Optional[str]:
    if not train_data:
        return None
    if train_data == "synthetic":
        return "synthetic"
    generated = generated_set_name(train_data)
    if generated:
        return generated
    path = os.path.abspath(train_data)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return os.path.basename(os.path.normpath(folder)) or train_data


def eval_set_name(val_data: Optional[str] = None, val_pairs: Optional[str] = None,
                  val_bin: Optional[str] = None) -> Optional[str]:
    generated = generated_set_name(val_data) if val_data else None
    if generated:
        return generated + HELD_OUT
    if val_bin:
        return default_name(val_bin)
    if val_data and os.fspath(val_data).lower().endswith(".bin") and not val_pairs:
        return default_name(val_data)
    if val_data and val_pairs:
        return default_name(val_pairs, val_data)
    return None


def run_set_names(cfg) -> Tuple[Optional[str], Optional[str]]:
    """``(train_set, eval_set)`` of a run config, as the run records them from its first moment: the
    eval set is the headline one (LFW when the run has it, else the first .bin, else the folder set)."""
    train = train_set_name(cfg.train_data) if cfg.mode != "eval" else None
    bins = list(cfg.val_bin_files()) if hasattr(cfg, "val_bin_files") else ([cfg.val_bin] if cfg.val_bin else [])
    val_data = cfg.val_data
    if val_data and not cfg.val_pairs and str(val_data).lower().endswith(".bin"):
        val_data, bins = None, [val_data] + bins
    names = [default_name(b) for b in bins]
    folder = eval_set_name(val_data, cfg.val_pairs) if val_data else None
    names += [folder] if folder else []
    return train, ("LFW" if "LFW" in names else (names[0] if names else None))
