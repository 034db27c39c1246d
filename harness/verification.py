"""Which reader opens a verification set: an LFW folder plus a pairs file, or a ``.bin``.

The readers live in :mod:`arcbench.data.pairs` and :mod:`arcbench.data.binset`
and both return the one shape, :class:`~arcbench.data.verification_set.VerificationSet`;
this module only picks between them and says which arguments are missing.
"""
from __future__ import annotations

import os
from typing import Optional

from .data.binset import load_bin
from .data.pairs import load_pairs
from .data.verification_set import VerificationSet
from .errors import ArcbenchError


def load_verification(val_data=None, val_pairs=None, val_bin=None, strict: bool = False,
                      name: Optional[str] = None) -> VerificationSet:
    """Load from ``val_data`` + ``val_pairs`` (LFW layout) or from ``val_bin``.

    ``val_data`` may itself be a ``.bin`` file when no pairs file is given, so the
    seed's ``--val_data_path lfw.bin`` works.
    """
    if val_bin is None and val_pairs is None and val_data is not None \
            and os.fspath(val_data).lower().endswith(".bin"):
        val_bin, val_data = val_data, None
    if val_bin is not None:
        if val_data is not None or val_pairs is not None:
            raise ArcbenchError("give either a .bin verification set or an image folder with a pairs file, "
                                "not both")
        return load_bin(val_bin, name=name)
    if val_data is None and val_pairs is None:
        raise ArcbenchError("no verification set given: an image folder with a pairs file "
                            "(--val-data DIR --val-pairs FILE), or a .bin (--val-bin FILE)")
    if val_data is None:
        raise ArcbenchError("a pairs file needs the image folder it refers to (--val-data DIR)", val_pairs)
    if val_pairs is None:
        raise ArcbenchError("an image folder needs a pairs file (--val-pairs FILE, e.g. lfw_pair.txt)", val_data)
    return load_pairs(val_data, val_pairs, strict=strict, name=name)
