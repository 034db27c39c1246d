"""Embedding every face of an IJB set once, cached on disk so an interrupted run resumes.

Each loose crop is aligned to the five-point template (:mod:`arcbench.verification.ijb.align`), scaled to
[-1, 1] like every other arcbench input, and embedded with its mirror image; the two raw
(unnormalised) embeddings are summed, as the published evaluation does.  The cache holds those
raw sums, so every weighting variant reads the same cache.  It is three ``.npy`` files in the
output folder, written in place batch by batch (``numpy.lib.format.open_memmap``): the features,
a status per face, and ``embeddings.json`` saying which weights and settings made them;
``--resume`` reuses them only when that matches.

A face that cannot be used is skipped and counted by reason: its crop is missing or cannot be
decoded, its landmarks lie outside the crop (by more than :data:`OUTSIDE_SLACK` of its size), or
its detector score is not above zero (with detector weighting it would add nothing but still
count in its media's mean).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Optional

import numpy as np
import torch

from ...record import atomic
from .meta import IJBMeta
from ...errors import ArcbenchError

#: face status codes in the cache
PENDING, OK, MISSING, UNDECODABLE, OUTSIDE, ZERO_SCORE = 0, 1, 2, 3, 4, 5
SKIP_REASONS = {MISSING: "crop missing", UNDECODABLE: "crop cannot be decoded",
                OUTSIDE: "landmarks outside the crop", ZERO_SCORE: "detector score not above 0"}
CACHE_FILES = ("embeddings.npy", "status.npy", "embeddings.json")
#: how far (a fraction of the crop's longer side) a landmark may lie outside its crop and still be
#: aligned (black fills the rest, as the published evaluation warps); further out, the landmarks
#: cannot belong to this crop (coordinates of another frame, the wrong file) and the face is skipped
OUTSIDE_SLACK = 0.25


def precheck(meta: IJBMeta) -> np.ndarray:
    """Status of each face that is known before decoding (zero score), else PENDING."""
    status = np.zeros(meta.num_faces, dtype=np.int8)
    status[~(meta.scores > 0)] = ZERO_SCORE
    return status


class _AlignedFaces(torch.utils.data.Dataset):
    """Face ``i`` -> ``(i, aligned CHW float32 in [-1, 1], status)``; an unusable face gives zeros."""

    def __init__(self, meta: IJBMeta, size: int):
        self.meta, self.size = meta, size

    def __len__(self) -> int:
        return self.meta.num_faces

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        from . import align
        from ...data.preprocess import to_array

        blank = torch.zeros(3, self.size, self.size)
        path = os.path.join(self.meta.image_dir, self.meta.images[i])
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except FileNotFoundError:
            return i, blank, MISSING
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return i, blank, UNDECODABLE
        lm = self.meta.landmarks[i]
        h, w = rgb.shape[:2]
        slack = OUTSIDE_SLACK * max(h, w)  # a face at the crop's edge may overshoot it a little
        if lm[:, 0].min() < -slack or lm[:, 1].min() < -slack or lm[:, 0].max() > w - 1 + slack \
                or lm[:, 1].max() > h - 1 + slack:
            return i, blank, OUTSIDE
        try:
            aligned = align.align(rgb, lm, self.size)
        except ValueError:
            return i, blank, OUTSIDE
        return i, torch.from_numpy(to_array(Image.fromarray(aligned))), OK


def weights_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_cache(out_dir: str, key: dict, n: int, dim: int, resume: bool):
    """``(features memmap, status memmap, faces already done)``; a stale cache is started afresh."""
    from numpy.lib.format import open_memmap

    os.makedirs(out_dir, exist_ok=True)
    fpath, spath, kpath = (os.path.join(out_dir, f) for f in CACHE_FILES)
    if resume and all(os.path.isfile(p) for p in (fpath, spath, kpath)):
        try:
            with open(kpath) as fh:
                saved = json.load(fh)
        except (OSError, ValueError):
            saved = None
        if saved != key:
            raise ArcbenchError("the cached embeddings were made with other weights or settings; "
                                "run without --resume to embed afresh", kpath)
        feats, status = open_memmap(fpath, mode="r+"), open_memmap(spath, mode="r+")
        if feats.shape != (n, dim) or status.shape != (n,):
            raise ArcbenchError("the cached embeddings do not fit this set; run without --resume", fpath)
        return feats, status, int(np.count_nonzero(status != PENDING))
    atomic.write_json(kpath, key)
    feats = open_memmap(fpath, mode="w+", dtype=np.float32, shape=(n, dim))
    status = open_memmap(spath, mode="w+", dtype=np.int8, shape=(n,))
    return feats, status, 0


def embed_faces(meta: IJBMeta, model: torch.nn.Module, device, out_dir: str, *, key: dict,
                batch_size: int = 128, flip: bool = True, amp: bool = False, workers: Optional[int] = None,
                input_size: int = 112, resume: bool = False, progress: bool = True, log=None):
    """``(features (F, D) float32 raw sums, status (F,) int8)`` for every face, via the cache."""
    from ..evaluate import default_workers

    n = meta.num_faces
    tdev = device.torch_device()
    model = model.eval()
    with torch.inference_mode():
        probe = model(torch.zeros(1, 3, input_size, input_size, device=tdev)).float().flatten(1)
    feats, status, done = _open_cache(out_dir, key, n, probe.shape[1], resume)
    if resume and log and done:
        log(f"arcbench: resuming: {done} of {n} faces already embedded ({os.path.join(out_dir, CACHE_FILES[0])})")
    pre = precheck(meta)
    todo_mask = (status == PENDING)
    status[todo_mask & (pre != PENDING)] = pre[todo_mask & (pre != PENDING)]
    todo = np.flatnonzero(status == PENDING)
    batches = [todo[i:i + batch_size].tolist() for i in range(0, len(todo), batch_size)]
    workers = default_workers(len(todo), batch_size) if workers is None else max(0, int(workers))
    loader = torch.utils.data.DataLoader(_AlignedFaces(meta, input_size), batch_sampler=batches,
                                         num_workers=workers)
    bar = None
    if progress and sys.stderr is not None and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=n, initial=n - len(todo), unit="face", desc=f"embed {meta.name}", file=sys.stderr)
    try:
        with torch.inference_mode():
            for k, (idx, images, codes) in enumerate(loader):
                idx, codes = idx.numpy(), codes.numpy().astype(np.int8)
                good = codes == OK
                if good.any():
                    x = images[torch.from_numpy(good)].to(tdev)
                    with device.autocast(amp):
                        out = model(x).float().flatten(1)
                        if flip:
                            out = out + model(torch.flip(x, dims=[3])).float().flatten(1)
                    feats[idx[good]] = out.cpu().numpy()
                status[idx] = codes  # after the features: a face marked done has its row written
                if k % 20 == 19:
                    feats.flush()
                    status.flush()
                if bar is not None:
                    bar.update(len(idx))
    finally:
        feats.flush()
        status.flush()
        if bar is not None:
            bar.close()
    return np.asarray(feats), np.asarray(status)
