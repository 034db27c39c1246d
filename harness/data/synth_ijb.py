"""A synthetic IJB-format mini set: the real protocol's files, with an answer known by construction.

IJB data cannot ship, so ``arcbench data synth --ijb`` writes a small set in the same layout
(``meta/`` with the three meta files, ``loose_crop/`` with the crops) from the synthetic faces of
:mod:`arcbench.data.synth_face`.  Each face is drawn already aligned (letterboxed to 112x112, so
its landmarks are by definition the ArcFace template), then placed into a bigger loose crop by a
random similarity transform (rotation, scale, shift) over a random background.  The five
landmarks written are the template carried by that transform, so aligning the crop must give
the drawn face back; ``planted.json`` keeps every transform.  Each identity's media (one to three
frames each) are split into two templates; the pairs are every template against every other
identity's second template (impostors) and its own (genuine).
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..record import atomic
from ..errors import ArcbenchError
from .synth_face import _rng, identity_params, render_jpeg

PREFIX = "synthijb"
LOOSE = 256              # loose crop side, pixels
SCALE = (1.1, 1.6)       # planted scale range
ANGLE = 20.0             # planted rotation range, +- degrees
_KIND_IJB = 7            # RNG stream of the IJB layout (disjoint from the face set's streams)
_ID_OFFSET = 2_000_000   # identities drawn from their own id space


def aligned_face(seed: int, gid: int, k: int) -> np.ndarray:
    """The face as the aligned 112x112 RGB crop (the reference's letterbox onto grey)."""
    from PIL import Image

    from .preprocess import letterbox

    img = Image.open(io.BytesIO(render_jpeg(seed, gid, k, identity_params(seed, gid)))).convert("RGB")
    return np.asarray(letterbox(img, 112))


def planted_transform(r: np.random.Generator) -> np.ndarray:
    """A random 2x3 similarity carrying the 112 crop somewhere inside the loose crop."""
    s = float(r.uniform(*SCALE))
    a = math.radians(float(r.uniform(-ANGLE, ANGLE)))
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    corners = np.array([[0, 0], [112, 0], [0, 112], [112, 112]], dtype=np.float64) @ rot.T
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    shift = np.array([r.uniform(-lo[0], LOOSE - hi[0]), r.uniform(-lo[1], LOOSE - hi[1])])
    return np.c_[rot, shift]


def loose_crop(face: np.ndarray, matrix: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """The face warped by ``matrix`` over a random smooth background."""
    from ..verification.ijb.align import cv2_module

    cv2 = cv2_module()
    base = r.integers(30, 220, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:LOOSE, 0:LOOSE].astype(np.float32) / LOOSE
    grad = r.uniform(-60, 60, size=(2, 3)).astype(np.float32)
    bg = base + xx[..., None] * grad[0] + yy[..., None] * grad[1] + r.normal(0, 6, (LOOSE, LOOSE, 3))
    warped = cv2.warpAffine(face, matrix, (LOOSE, LOOSE), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones(face.shape[:2], np.float32), matrix, (LOOSE, LOOSE), flags=cv2.INTER_LINEAR)
    out = bg * (1 - mask[..., None]) + warped.astype(np.float32) * mask[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def generate_ijb(out_dir, identities: int = 20, media: int = 4, max_frames: int = 3, seed: int = 0,
                 progress=None) -> dict:
    """Write the mini set under ``out_dir``; returns counts and paths."""
    from PIL import Image

    from ..verification.ijb.align import apply, template

    if identities < 2 or media < 2 or max_frames < 1:
        raise ArcbenchError("a synthetic IJB set needs at least 2 identities, 2 media each and 1 frame")
    out = Path(out_dir)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    (out / "loose_crop").mkdir(parents=True, exist_ok=True)
    faces, lmk_lines, planted = [], [], {}
    media_id = 0
    n = 0
    for i in range(identities):
        gid = _ID_OFFSET + i
        r = _rng(seed, _KIND_IJB, gid, 0)
        k = 0
        for m in range(media):
            media_id += 1
            tid = 2 * i + 1 + (m >= media // 2)  # first half of the media: template A, the rest: B
            for _f in range(int(r.integers(1, max_frames + 1))):
                n += 1
                name = f"{n}.jpg"
                matrix = planted_transform(r)
                crop = loose_crop(aligned_face(seed, gid, k), matrix, r)
                Image.fromarray(crop).save(out / "loose_crop" / name, format="JPEG", quality=95)
                lm = apply(matrix, template(112))
                score = float(r.uniform(0.5, 1.0))
                faces.append(f"{name} {tid} {media_id}")
                lmk_lines.append(" ".join([name] + [f"{v:.3f}" for v in lm.reshape(-1)] + [f"{score:.4f}"]))
                planted[name] = {"matrix": matrix.tolist(), "identity": i, "template": tid}
                k += 1
                if progress:
                    progress(1)
    pairs = [f"{2 * a + 1} {2 * b + 2} {int(a == b)}" for a in range(identities) for b in range(identities)]
    meta = out / "meta"
    files = {"faces": meta / f"{PREFIX}_face_tid_mid.txt", "landmarks": meta / f"{PREFIX}_name_5pts_score.txt",
             "pairs": meta / f"{PREFIX}_template_pair_label.txt"}
    atomic.write_text(files["faces"], "\n".join(faces) + "\n")
    atomic.write_text(files["landmarks"], "\n".join(lmk_lines) + "\n")
    atomic.write_text(files["pairs"], "\n".join(pairs) + "\n")
    atomic.write_json(out / "planted.json", planted)
    summary = {"root": str(out), "identities": identities, "faces": n, "media": media_id,
               "templates": 2 * identities, "pairs": len(pairs), "genuine_pairs": identities, "seed": seed,
               "synthetic": True}
    atomic.write_json(out / "synth.json", {"kind": "ijb", **summary})
    return {**summary, **{f"{k}_file": str(v) for k, v in files.items()}}


def read_planted(root) -> Optional[dict]:
    path = os.path.join(os.fspath(root), "planted.json")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)
