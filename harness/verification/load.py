"""Which reader opens a verification set: an LFW folder plus a pairs file, or a ``.bin``.

The readers live in :mod:`arcbench.verification.pairs` and :mod:`arcbench.verification.binset`
and both return the one shape, :class:`~arcbench.verification.sets.VerificationSet`;
this module only picks between them and says which arguments are missing.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from ..errors import ArcbenchError
from .binset import load_bin
from .pairs import load_pairs
from .sets import VerificationSet


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


def load_verification_sets(val_data=None, val_pairs=None, val_bins: Sequence = (), strict: bool = False,
                           name: Optional[str] = None) -> List[VerificationSet]:
    """Every verification set of a run: each ``.bin`` in ``val_bins`` and the folder + pairs set.

    The first set is the run's headline set (its figures fill the single-set summary fields that
    reports have always read): the one named LFW when there is one, else the first given.  ``name``
    names the folder set.  Two sets with one name are refused: their records would mix.
    """
    sets = [load_bin(path) for path in val_bins]
    if val_data is not None or val_pairs is not None:
        sets.append(load_verification(val_data=val_data, val_pairs=val_pairs, strict=strict, name=name))
    seen = {}
    for vset in sets:
        if vset.name in seen:
            raise ArcbenchError(f"two verification sets are both named {vset.name!r} "
                                f"({seen[vset.name]} and {vset.source}); give each set once", vset.source or None)
        seen[vset.name] = vset.source
    lfw = [v for v in sets if v.name == "LFW"]
    return lfw + [v for v in sets if v.name != "LFW"]

