"""insightface ``.bin`` verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin ...).

The file is a pickle of ``(images, issame)``: a list of 2N encoded images
(JPEG/PNG bytes; pair ``i`` is images ``2i`` and ``2i+1``) and a list of N
bools.  Such files come from strangers on the internet, so they are read with
an unpickler that resolves no globals (bar guarded bytes constructors):
lists, tuples, bytes and bools are plain opcodes and need none, while anything that names a callable
(``os.system``, ``builtins.eval``, numpy's reconstructors) is refused before
it can run.  ``encoding="bytes"`` keeps Python 2 ``str`` payloads (the
original files were written under Python 2) as raw bytes.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ArcbenchError
from .protocol import contiguous_folds
from .sets import VerificationSet, default_name


class _Refused(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _latin1_bytes(text, encoding="latin1"):
    """What Python 3 writes for ``bytes`` under pickle protocol <= 2: ``_codecs.encode(str, 'latin1')``.

    Admitted only with exactly that shape, so it can rebuild bytes and nothing else.
    """
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _bytearray(data=b"", encoding=None):
    """``bytearray`` as pickled by protocols 2-4, from bytes (or latin-1 text) only; never a size."""
    if isinstance(data, bytes) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return bytearray(data.encode("latin-1"))
    raise _Refused(f"builtins.bytearray({type(data).__name__})")


#: the only globals a .bin may name, each a guarded stand-in that can build bytes and nothing else
_ADMITTED = {("_codecs", "encode"): _latin1_bytes, ("builtins", "bytearray"): _bytearray,
             ("__builtin__", "bytearray"): _bytearray}


class DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and scalars; refuses every global and persistent id.

    The exceptions are guarded stand-ins for ``_codecs.encode`` and
    ``bytearray``, which Python 3 writes for bytes/bytearray under protocols
    2-4 (a .bin re-saved from Python 3 needs them for its image bytes).
    """

    def find_class(self, module, name):  # noqa: D401 - pickle API
        if isinstance(module, bytes):
            module = module.decode("latin-1")
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if (module, name) in _ADMITTED:
            return _ADMITTED[(module, name)]
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def safe_loads(data: bytes, path: str = "<bytes>"):
    """``pickle.loads`` restricted to data; an attempt to reach code is an ArcbenchError."""
    try:
        return DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise ArcbenchError(f"refusing to load: the pickle references {exc.what}; a verification .bin "
                            "must hold only lists of image bytes and bools", path) from None
    except Exception as exc:  # hostile bytes can make the unpickler raise almost anything
        raise ArcbenchError(f"not a readable pickle ({type(exc).__name__}: {str(exc)[:120]})", path) from None


def _as_list(obj) -> Optional[list]:
    return list(obj) if isinstance(obj, (list, tuple)) else None


def read_bin(path) -> Tuple[List[bytes], np.ndarray]:
    """``(images, issame)`` from a .bin, with its structure checked."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArcbenchError("verification .bin not found", path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ArcbenchError(f"cannot read: {exc.strerror or exc}", path) from None
    obj = safe_loads(data, path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ArcbenchError(f"expected a pickled 2-tuple (images, issame), got "
                            f"{type(obj).__name__}{' of length %d' % len(obj) if isinstance(obj, (tuple, list)) else ''}",
                            path)
    images, issame = _as_list(obj[0]), _as_list(obj[1])
    if images is None or issame is None:
        raise ArcbenchError(f"expected (list of image bytes, list of bools), got "
                            f"({type(obj[0]).__name__}, {type(obj[1]).__name__})", path)
    if not issame:
        raise ArcbenchError("the set has no pairs", path)
    if len(images) != 2 * len(issame):
        raise ArcbenchError(f"{len(images)} images for {len(issame)} pairs; expected exactly 2 per pair", path)
    out: List[bytes] = []
    for i, img in enumerate(images):
        if isinstance(img, bytearray):
            img = bytes(img)
        if not isinstance(img, bytes):
            raise ArcbenchError(f"image {i} is {type(img).__name__}, expected encoded image bytes", path)
        if not img:
            raise ArcbenchError(f"image {i} is empty", path)
        out.append(img)
    flags = []
    for i, v in enumerate(issame):
        if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
            flags.append(bool(v))
        else:
            raise ArcbenchError(f"issame[{i}] is {v!r}, expected a bool", path)
    return out, np.asarray(flags, dtype=bool)


def load_bin(path, name: Optional[str] = None, n_folds: int = 10) -> VerificationSet:
    """A :class:`~arcbench.verification.sets.VerificationSet` from a .bin; byte-identical
    images are embedded once."""
    path = os.fspath(path)
    images, issame = read_bin(path)
    index: Dict[bytes, int] = {}
    unique: List[bytes] = []
    ids = np.empty(len(images), dtype=np.int64)
    for i, img in enumerate(images):
        j = index.get(img)
        if j is None:
            j = index[img] = len(unique)
            unique.append(img)
        ids[i] = j
    return VerificationSet(
        name=name or default_name(path),
        images=unique,
        pairs=ids.reshape(-1, 2),
        issame=issame,
        folds=contiguous_folds(len(issame), n_folds),
        pairs_skipped=0,
        lines=None,
        source=path,
    )
