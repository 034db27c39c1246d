"""Inputs checked before a run directory is made: a malformed file is one line naming it, and no
``failed`` run is left behind for a mistake that reading the file would have shown."""
from __future__ import annotations

from .config import RunConfig


def check_inputs(cfg: RunConfig) -> None:
    """Read what can be read cheaply without the images: the pairs file (every line), and the
    annotation file's presence.  Raises :class:`~arcbench.errors.ArcbenchError` naming the file."""
    if cfg.val_pairs and (cfg.val_data or cfg.mode == "eval"):
        from .data.pairs import parse_pairs

        parse_pairs(cfg.val_pairs)
