"""Deterministic synthetic face-like identities: arcbench's embedded default data set.

Nothing is downloaded.  How one face is drawn lives in
:mod:`arcbench.data.synth_face`; this module lays out a whole set of them,
writes its index and pairs protocol, and caches the default set.

Determinism: each identity and each image has its own RNG seeded from
``(seed, kind, identity, k)``, so output is byte-identical for a seed
whatever the process count or order.  Bump :data:`GENERATOR_VERSION` when
the pictures change; it keys the cache of :func:`default_dataset`.

Layout written by :func:`generate`::

    DIR/train/<identity>/<k>.jpg        training identities
    DIR/cls_train.txt                   <label>;<path> (paths relative to DIR)
    DIR/verify/<name>/<name>_0001.jpg   LFW layout, held-out identities
    DIR/pairs.txt                       LFW pairs protocol, 10 identity-disjoint folds
    DIR/synth.json                      parameters and counts (provenance); marks a generated set
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..record import atomic
from ..errors import ArcbenchError
from . import index as _index
from .face_drawing import HEIGHT, WIDTH
from .synth_face import _KIND_PAIRS, _rng, identity_params, render_jpeg

GENERATOR_VERSION = 1

#: the name a run records for a generated set (train or held-out identities)
SYNTHETIC_FACES = "synthetic-faces"

# Sized for the embedded default run (MobileFaceNet + ArcFace s=32 m=0.5, SGD, cosine, CPU):
# 3,200 training images; measured 10-fold accuracy ~0.90 after 6.4k images seen and ~0.93
# after 12.8k, while raw pixels score ~0.73 (the nuisance matters).  Generates in ~5 s on 2 cores.
DEFAULTS = dict(identities=200, images_per_identity=16, verify_identities=100, verify_images=6,
                pairs=100, seed=0)

_VERIFY_OFFSET = 1_000_000  # verify identities draw from a disjoint id space


def is_generated(path: Optional[str]) -> bool:
    """Data made by ``arcbench data synth`` (it leaves a marker file)."""
    if not path or path == "synthetic":
        return path == "synthetic"
    return synth_root(path) is not None


def synth_root(path: Optional[str]) -> Optional[str]:
    """The folder holding the ``synth.json`` of the generated set ``path`` is in (or is), else None."""
    if not path or path == "synthetic":
        return None
    root = path if os.path.isdir(path) else os.path.dirname(path)
    for candidate in (root, os.path.dirname(root)):
        if os.path.exists(os.path.join(candidate, "synth.json")):
            return candidate
    return None


# ---------------------------------------------------------------- generation
def _train_name(i: int) -> str:
    return f"id{i:05d}"


def _verify_name(i: int) -> str:
    return f"person_{i:04d}"


def _write_identity(task) -> int:
    """Worker: render all images of one identity (top level so pools can pickle it)."""
    folder, seed, gid, names = task
    p = identity_params(seed, gid)
    os.makedirs(folder, exist_ok=True)
    for k, name in enumerate(names):
        data = render_jpeg(seed, gid, k, p)
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
    return len(names)


def make_pairs(names: Sequence[str], images: int, pairs: int, seed: int) -> List[List[tuple]]:
    """10 identity-disjoint folds of ``pairs`` positive then ``pairs`` negative pairs."""
    if len(names) < 20:
        raise ArcbenchError(f"need at least 20 verify identities for 10 identity-disjoint folds, got {len(names)}")
    if images < 2:
        raise ArcbenchError("need at least 2 images per verify identity for positive pairs")
    r = _rng(seed, _KIND_PAIRS)
    order = r.permutation(len(names))
    groups = np.array_split(order, 10)
    folds = []
    for g in groups:
        g = sorted(int(i) for i in g)
        pos_all = [(n, i, j) for n in g for i in range(1, images + 1) for j in range(i + 1, images + 1)]
        n_neg_all = (len(g) * images) ** 2 // 2 - len(g) * images * images // 2
        if pairs > len(pos_all) or pairs > n_neg_all:
            raise ArcbenchError(
                f"{pairs} pairs per fold is more than {len(g)} identities x {images} images per fold allow "
                f"({len(pos_all)} distinct positive pairs); ask for fewer pairs or more verify identities/images")
        pos = sorted(pos_all[int(i)] for i in r.choice(len(pos_all), size=pairs, replace=False))
        neg = set()
        while len(neg) < pairs:
            a, b = r.choice(g, size=2, replace=False)
            a, b = int(min(a, b)), int(max(a, b))
            neg.add((a, int(r.integers(1, images + 1)), b, int(r.integers(1, images + 1))))
        fold = [(names[n], i, j) for n, i, j in pos]
        fold += [(names[a], i, names[b], j) for a, i, b, j in sorted(neg)]
        folds.append(fold)
    return folds


def format_pairs(folds: List[List[tuple]], pairs: int) -> str:
    lines = [f"{len(folds)}\t{pairs}"]
    lines += ["\t".join(str(x) for x in row) for fold in folds for row in fold]
    return "\n".join(lines) + "\n"


def generate(out_dir, identities: int = DEFAULTS["identities"],
             images_per_identity: int = DEFAULTS["images_per_identity"],
             verify_identities: int = DEFAULTS["verify_identities"],
             pairs: int = DEFAULTS["pairs"], seed: int = DEFAULTS["seed"],
             verify_images: int = DEFAULTS["verify_images"], workers: Optional[int] = None,
             progress: Optional[Callable[[int], None]] = None, overwrite: bool = False,
             name: Optional[str] = None) -> Dict:
    """Write a synthetic face data set into ``out_dir``; returns a summary dict.

    ``workers``: processes to render with (default: the CPUs, 0/1 = in this
    process).  ``progress(n)`` is called with each batch of images written.
    Refuses to write over an existing ``train``/``verify`` unless
    ``overwrite``, because left-over identities would change the index.
    ``name``: what runs call the set, recorded in ``synth.json``; without one the set is called by
    its folder's name (and the same seed still writes byte-identical files wherever it writes them).
    """
    for option, v, lo in (("identities", identities, 1), ("images_per_identity", images_per_identity, 1),
                          ("verify_identities", verify_identities, 0), ("pairs", pairs, 0),
                          ("verify_images", verify_images, 1), ("seed", seed, 0)):
        if int(v) < lo:
            raise ArcbenchError(f"{option} must be >= {lo}, got {v}")
    out = Path(out_dir)
    seed = int(seed)
    train_names = [_train_name(i) for i in range(identities)]
    verify_names = [_verify_name(i) for i in range(verify_identities)]
    # pairs that cannot be drawn are refused before the folder is made
    folds = make_pairs(verify_names, verify_images, pairs, seed) if verify_identities and pairs else None
    _clear_images(out, overwrite)
    t0 = time.perf_counter()
    tasks = [(str(out / "train" / n), seed, i, [f"{k}.jpg" for k in range(images_per_identity)])
             for i, n in enumerate(train_names)]
    tasks += [(str(out / "verify" / n), seed, _VERIFY_OFFSET + i,
               [f"{n}_{k + 1:04d}.jpg" for k in range(verify_images)]) for i, n in enumerate(verify_names)]
    total = identities * images_per_identity + verify_identities * verify_images
    _write_all(tasks, total, workers, progress)

    train_paths = [f"train/{n}/{k}.jpg" for n in train_names for k in range(images_per_identity)]
    train_labels = [i for i in range(identities) for _ in range(images_per_identity)]
    _index.write_annotation(out / "cls_train.txt", train_paths, train_labels)
    if folds is not None:
        atomic.write_text(out / "pairs.txt", format_pairs(folds, pairs))
    summary = dict(
        generator="arcbench.synth", version=GENERATOR_VERSION, **({"name": name} if name else {}), seed=seed, width=WIDTH, height=HEIGHT,
        identities=identities, images_per_identity=images_per_identity, train_images=len(train_paths),
        verify_identities=verify_identities, verify_images=verify_images,
        verify_total=verify_identities * verify_images, pairs_per_fold=pairs if folds else 0, folds=10 if folds else 0,
        train=str(out / "train"), annotation=str(out / "cls_train.txt"), verify=str(out / "verify"),
        pairs_file=str(out / "pairs.txt") if folds else None, seconds=round(time.perf_counter() - t0, 2),
    )
    atomic.write_json(out / "synth.json", {k: v for k, v in summary.items()
                                           if k not in ("train", "annotation", "verify", "pairs_file", "seconds")})
    return summary


def _clear_images(out: Path, overwrite: bool) -> None:
    """Make ``out`` and empty it of a previous set's images (only when told to overwrite)."""
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("train", "verify"):
        if (out / sub).exists():
            if not overwrite:
                raise ArcbenchError(f"{sub}/ already exists; choose an empty folder or overwrite", out)
            shutil.rmtree(out / sub)


def _write_all(tasks: list, total: int, workers: Optional[int],
               progress: Optional[Callable[[int], None]]) -> None:
    """Render every identity's images, in a process pool when it pays; each file is independent,
    so the completion order does not matter."""
    if workers is None:
        workers = _default_workers()
    if workers > 1 and len(tasks) > 1 and total >= 32:  # below that a pool costs more than it saves
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(min(workers, len(tasks)), initializer=_worker_signals) as pool:
            for n in pool.imap_unordered(_write_identity, tasks, chunksize=max(1, len(tasks) // (workers * 8))):
                if progress:
                    progress(n)
    else:
        for t in tasks:
            n = _write_identity(t)
            if progress:
                progress(n)


def _worker_signals() -> None:
    """A forked worker inherits its parent's SIGTERM handler; one that does not exit (an embedding
    program's, or a run's stop-at-the-step-boundary handler) would make the pool's terminate() at the
    end wait on that worker forever."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cache_root(cache_dir=None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("ARCBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "arcbench"


def default_key(**params) -> str:
    spec = dict(DEFAULTS, **params, version=GENERATOR_VERSION)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return f"synthfaces-v{GENERATOR_VERSION}-{digest}"


def default_dataset(cache_dir=None, progress: Optional[Callable[[int], None]] = None,
                    log: Optional[Callable[[str], None]] = None, **params) -> Path:
    """The default set, generated once into the cache and reused.

    Generated into a temporary sibling folder and renamed into place, so a
    half-written set is never visible and concurrent callers are safe (the
    loser of the rename race discards its copy).  ``params`` override
    :data:`DEFAULTS` and are part of the cache key.  ``log(line)`` hears, when
    the set has to be generated, what is being made and where, then how long it took.
    """
    root = cache_root(cache_dir)
    final = root / default_key(**params)
    if (final / "synth.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    spec = dict(DEFAULTS, **params)
    start = time.perf_counter()
    if log:
        log(f"arcbench: generating the synthetic face set once ({spec['identities']} identities x "
            f"{spec['images_per_identity']} images, {spec['verify_identities']} held-out identities) "
            f"into {final} ...")
    try:
        generate(tmp, **spec, progress=progress, name=SYNTHETIC_FACES)
        if log:
            log(f"arcbench: synthetic face set ready in {time.perf_counter() - start:.1f} s; later runs reuse it")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "synth.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
