"""Deterministic synthetic face-like identities: arcbench's embedded default data set.

Nothing is downloaded.  Every identity draws its own face parameters (shape,
skin, eyes, brows, nose, mouth, hair, ears, glasses, beard, moles); every
image then adds expression, pose, scale, shift, background, lighting, blur,
noise and JPEG quality on top, so a model has to learn the identity rather
than the pixels.  Images are 96x112 (width x height) like the reference's
aligned crops, so the letterbox path is exercised exactly as with real data.

Determinism: each identity and each image has its own RNG seeded from
``(seed, kind, identity, k)``, so output is byte-identical for a seed
whatever the process count or order.  Bump :data:`GENERATOR_VERSION` when
the pictures change; it keys the cache of :func:`default_dataset`.

Layout written by :func:`generate`::

    DIR/train/<identity>/<k>.jpg        training identities
    DIR/cls_train.txt                   <label>;<path> (paths relative to DIR)
    DIR/verify/<name>/<name>_0001.jpg   LFW layout, held-out identities
    DIR/pairs.txt                       LFW pairs protocol, 10 identity-disjoint folds
    DIR/synth.json                      parameters and counts (provenance)
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .. import atomic
from ..errors import ArcbenchError
from . import index as _index

GENERATOR_VERSION = 1
WIDTH, HEIGHT = 96, 112
_SS = 2  # supersampling factor: draw at 2x, then box-downsample (anti-aliasing)

# Sized for the embedded default run (MobileFaceNet + ArcFace s=32 m=0.5, SGD, cosine, CPU):
# 3,200 training images; measured 10-fold accuracy ~0.90 after 6.4k images seen and ~0.93
# after 12.8k, while raw pixels score ~0.73 (the nuisance matters).  Generates in ~5 s on 2 cores.
DEFAULTS = dict(identities=200, images_per_identity=16, verify_identities=100, verify_images=6,
                pairs=100, seed=0)

_KIND_IDENTITY, _KIND_IMAGE, _KIND_PAIRS = 1, 2, 3
_VERIFY_OFFSET = 1_000_000  # verify identities draw from a disjoint id space


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


# ---------------------------------------------------------------- identities
_HAIR = np.array([(22, 18, 16), (55, 38, 26), (95, 64, 40), (150, 110, 70), (205, 170, 110),
                  (140, 62, 32), (135, 132, 128), (215, 212, 205)], dtype=float)
_HAIR_P = np.array([0.26, 0.2, 0.16, 0.1, 0.09, 0.07, 0.07, 0.05])
_IRIS = np.array([(50, 32, 22), (95, 60, 32), (120, 100, 48), (65, 110, 70), (60, 105, 170),
                  (115, 128, 140)], dtype=float)
_SKIN_LIGHT = np.array([240, 205, 175], dtype=float)
_SKIN_DARK = np.array([92, 58, 40], dtype=float)


def identity_params(seed: int, gid: int) -> dict:
    """The fixed look of identity ``gid`` (a plain dict of numbers)."""
    r = _rng(seed, _KIND_IDENTITY, gid)
    u = r.uniform
    skin = _SKIN_DARK + u(0, 1) * (_SKIN_LIGHT - _SKIN_DARK) + r.normal(0, 9, 3)
    hair = _HAIR[r.choice(len(_HAIR), p=_HAIR_P)] + r.normal(0, 12, 3)
    p = dict(
        skin=skin, hair=hair,
        face_cx=48 + u(-1.5, 1.5), face_cy=u(58, 64), face_a=u(33, 44), face_b=u(50, 60),
        round_n=u(2.0, 3.4), taper=u(0.5, 0.95),
        hairline=u(10, 26), hair_style=int(r.integers(0, 6)), hair_vol=u(2, 9), part=u(-9, 9),
        ear_w=u(5, 9), ear_h=u(10, 16), ear_y=u(50, 62),
        eye_y=u(47, 54), eye_dx=u(14.5, 20), eye_w=u(9, 14), eye_h=u(0.38, 0.65), eye_tilt=u(-9, 9),
        iris=_IRIS[r.integers(len(_IRIS))] + r.normal(0, 12, 3), iris_r=u(0.32, 0.48),
        brow_dy=u(6, 11), brow_len=u(1.0, 1.45), brow_th=u(1.4, 4.2), brow_arch=u(-1, 4),
        brow_tilt=u(-10, 10), brow_dark=u(0.2, 0.8),
        nose_y=u(68, 77), nose_w=u(7, 14), nose_style=int(r.integers(0, 3)), nose_dark=u(0.6, 0.85),
        mouth_y=u(86, 96), mouth_w=u(17, 31), lip_th=u(1.5, 6), smile=u(-3, 5), lip_mix=u(0.2, 0.7),
        blush=u(0, 1) < 0.3, mole=u(0, 1) < 0.45, mole_x=u(-0.75, 0.75), mole_y=u(-0.1, 0.8),
        mole_r=u(1.0, 2.3),
        glasses=u(0, 1) < 0.22, glass_round=u(0, 1) < 0.5, glass_col=np.array(
            [(20, 20, 20), (140, 110, 40), (150, 30, 30), (40, 40, 120)][r.integers(4)], dtype=float),
        glass_th=u(1.0, 2.6),
        beard=int(r.integers(1, 4)) if u(0, 1) < 0.22 else 0,
    )
    if p["hair_style"] == 4:  # balding: high hairline
        p["hairline"] = u(4, 10)
    return p


def _col(c, a=255) -> Tuple[int, int, int, int]:
    c = np.clip(np.asarray(c, dtype=float), 0, 255)
    return int(c[0]), int(c[1]), int(c[2]), int(a)


def _face_outline(p, dx: float, n_pts: int = 72) -> List[Tuple[float, float]]:
    cx, cy, a, b, n = p["face_cx"] + dx, p["face_cy"], p["face_a"], p["face_b"], p["round_n"]
    pts = []
    for i in range(n_pts):
        t = 2 * math.pi * i / n_pts
        c, s = math.cos(t), math.sin(t)
        x = math.copysign(abs(c) ** (2 / n), c)
        y = math.copysign(abs(s) ** (2 / n), s)
        if y > 0:  # narrow towards the chin
            x *= 1 - (1 - p["taper"]) * y ** 1.5
        pts.append((cx + a * x, cy + b * y))
    return pts


class _Canvas:
    """ImageDraw at supersampled scale with the pose (rotation, scale, shift) folded into
    the coordinates, so shapes are drawn once and never resampled."""

    def __init__(self, img: Image.Image, ang: float, sc: float, tx: float, ty: float, ox: float, oy: float):
        self.d = ImageDraw.Draw(img)
        S = _SS
        c, s = math.cos(ang) * sc * S, math.sin(ang) * sc * S
        self.m = (c, -s, (ox + tx) * S - c * ox + s * oy, s, c, (oy + ty) * S - s * ox - c * oy)
        self.lw = sc * S

    def pts(self, xy):
        a, b, c, d, e, f = self.m
        return [(a * x + b * y + c, d * x + e * y + f) for x, y in xy]

    def poly(self, xy, fill, outline=None):
        self.d.polygon(self.pts(xy), fill=fill, outline=outline)

    def ellipse_pts(self, cx, cy, rx, ry, n=20):
        return [(cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n)) for i in range(n)]

    def ell(self, cx, cy, rx, ry, fill=None, outline=None, width=1.0):
        xy = self.ellipse_pts(cx, cy, rx, ry, 24 if max(rx, ry) > 4 else 12)
        if fill is not None:
            self.poly(xy, fill)
        if outline is not None:
            self.line(xy + xy[:1], outline, width)

    def rect(self, x0, y0, x1, y1, fill=None, outline=None, width=1.0):
        xy = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        if fill is not None:
            self.poly(xy, fill)
        if outline is not None:
            self.line(xy + xy[:1], outline, width)

    def line(self, xy, fill, width):
        self.d.line(self.pts(xy), fill=fill, width=max(1, int(round(width * self.lw))), joint="curve")


def _render(p: dict, r: np.random.Generator) -> Image.Image:
    """Draw one image of identity ``p`` with nuisance drawn from ``r``."""
    u = r.uniform
    S = _SS
    W, H = WIDTH * S, HEIGHT * S

    # per-image pose, expression and background
    ang, sc, tx, ty = math.radians(u(-11, 11)), u(0.88, 1.12), u(-5, 5), u(-5, 5)
    yaw = u(-4.5, 4.5)
    smile = p["smile"] + r.normal(0, 1.3)
    eye_open = u(0.7, 1.1)
    brow_up = r.normal(0, 1.0)
    gaze = u(-1.2, 1.2)
    grey = u(40, 215)  # muted backgrounds, like real crops: grey level plus some colour
    c0, c1 = (grey + (r.uniform(20, 235, 3) - grey) * u(0.15, 0.7) for _ in range(2))
    t = np.linspace(0, 1, 8, dtype=np.float32)[:, None]
    ramp = (c0 * (1 - t) + c1 * t).astype(np.uint8)[None] if r.uniform() < 0.5 else \
        (c0 * (1 - t) + c1 * t).astype(np.uint8)[:, None]
    img = Image.fromarray(np.ascontiguousarray(ramp), "RGB").resize((W, H), Image.BILINEAR)

    skin, hair = p["skin"], p["hair"]
    cv = _Canvas(img, ang, sc, tx, ty, p["face_cx"], 60.0)
    ell, poly, line = cv.ell, cv.poly, cv.line

    outline = _face_outline(p, yaw * 0.35)
    cx, a = p["face_cx"] + yaw * 0.35, p["face_a"]
    fx = p["face_cx"] + yaw  # features move more than the outline: a cheap yaw
    top = p["face_cy"] - p["face_b"]
    style = p["hair_style"]

    # back hair (volume and long/curly styles)
    if style in (1, 5):
        grow = 14 if style == 5 else 4
        ell(cx, p["face_cy"] - 6, a + grow + p["hair_vol"], p["face_b"] + grow * 0.6, _col(hair))
        if style == 1:
            cv.rect(cx - a - 6, p["face_cy"] - 10, cx + a + 6, p["face_cy"] + 44, fill=_col(hair))
    elif style != 4:
        ell(cx, top + p["face_b"] * 0.55, a + 2 + p["hair_vol"] * 0.5, p["face_b"] * 0.55 + p["hair_vol"],
            _col(hair))
    # neck, ears, face
    cv.rect(cx - a * 0.45, p["face_cy"] + 20, cx + a * 0.45, HEIGHT + 30, fill=_col(skin * 0.82))
    for side in (-1, 1):
        ex = cx + side * (a - 1.5) + yaw * 0.3 * side
        ell(ex, p["ear_y"], p["ear_w"] * (1 - 0.08 * side * yaw / 4.5), p["ear_h"], _col(skin * 0.9))
    poly(outline, _col(skin))
    if p["blush"]:
        for side in (-1, 1):
            ell(fx + side * (p["eye_dx"] + 2), p["nose_y"] + 2, 6, 4, _col(skin * 0.72 + np.array([230, 90, 90]) * 0.28))
    # beard
    if p["beard"]:
        bc = _col(hair * 0.9)
        my, mw = p["mouth_y"], p["mouth_w"]
        if p["beard"] in (1, 3):  # moustache
            poly([(fx - mw * 0.55, my - 1), (fx, my - 6), (fx + mw * 0.55, my - 1), (fx, my - 3)], bc)
        if p["beard"] in (2, 3):  # chin beard following the jaw
            jaw = sorted(((x, y) for x, y in outline if y > my - 6), key=lambda q: q[0])
            poly(jaw + [(fx + mw * 0.6, my + 3), (fx - mw * 0.6, my + 3)], bc)
    # hair on the head: the outline above the hairline, closed by a (styled) edge
    if style != 4 or p["hairline"] > 6:
        hl = p["hairline"] + (p["face_cy"] - 60) * 0.5
        arc = sorted(((x, y) for x, y in outline if y < hl), key=lambda q: q[0])
        if len(arc) >= 3:
            grow = 1.5 + (p["hair_vol"] * 0.3 if style != 4 else 0)
            arc = [(x + math.copysign(grow, x - cx), y - grow) for x, y in arc]
            x0, x1 = arc[-1][0], arc[0][0]
            if style == 2:  # bangs: jagged fringe down to the brows
                fy = p["eye_y"] - p["brow_dy"] - 4
                edge = [(x0 + (x1 - x0) * i / 7, fy - (3 if i % 2 else 0)) for i in range(8)]
            elif style == 3:  # side part: slanted edge
                edge = [(x0, hl + 6 + p["part"] * 0.4), (fx + p["part"], hl - 2), (x1, hl + 6 - p["part"] * 0.4)]
            else:
                edge = [(x0, hl + 3), (fx, hl - 1.5), (x1, hl + 3)]
            poly(arc + edge, _col(hair))

    # eyes and brows
    ey, eh = p["eye_y"], p["eye_w"] * p["eye_h"] * 0.5 * eye_open
    for side in (-1, 1):
        ex = fx + side * p["eye_dx"]
        ew = p["eye_w"] * 0.5 * (1 - 0.06 * side * yaw / 4.5)
        tilt = math.radians(p["eye_tilt"]) * side
        ct, st = math.cos(tilt), math.sin(tilt)
        pts = []
        for i in range(16):
            q = 2 * math.pi * i / 16
            x, y = ew * math.cos(q), eh * math.sin(q) * (1.15 if math.sin(q) < 0 else 0.85)
            pts.append((ex + x * ct - y * st, ey + x * st + y * ct))
        poly(pts, _col((235, 232, 225)), outline=_col(skin * 0.35))
        ir = max(1.0, p["eye_w"] * p["iris_r"] * 0.8)
        ir_y = min(ir, eh + 0.6)
        ell(ex + gaze, ey, ir, ir_y, _col(p["iris"]))
        ell(ex + gaze, ey, ir * 0.45, min(ir * 0.45, ir_y), _col((12, 10, 10)))
        by = ey - p["brow_dy"] - brow_up
        bl = p["eye_w"] * p["brow_len"] * 0.5
        bt = math.radians(p["brow_tilt"]) * side
        cb, sb = math.cos(bt), math.sin(bt)
        bc = _col(hair * (1 - p["brow_dark"]) + np.array([25, 20, 18]) * p["brow_dark"])
        bpts = []
        for i in range(7):
            s = -1 + 2 * i / 6
            x, y = s * bl, -p["brow_arch"] * (1 - s * s)
            bpts.append((ex + x * cb - y * sb, by + x * sb + y * cb))
        line(bpts, bc, p["brow_th"])
    # nose
    ny, nw = p["nose_y"], p["nose_w"]
    nc = _col(skin * p["nose_dark"])
    nx = fx + yaw * 0.4
    if p["nose_style"] == 0:
        line([(nx - 1, ey + 5), (nx - nw * 0.25, ny - 2), (nx - nw * 0.45, ny), (nx, ny + 1.5), (nx + nw * 0.45, ny)],
             nc, 1.3)
    elif p["nose_style"] == 1:
        poly([(nx, ey + 6), (nx - nw * 0.5, ny + 1), (nx + nw * 0.5, ny + 1)], _col(skin * 0.92))
        ell(nx - nw * 0.25, ny, 1.6, 1.1, nc)
        ell(nx + nw * 0.25, ny, 1.6, 1.1, nc)
    else:
        ell(nx, ny - 1, nw * 0.4, 3, _col(skin * 0.9))
        ell(nx - nw * 0.3, ny + 0.5, 1.8, 1.2, nc)
        ell(nx + nw * 0.3, ny + 0.5, 1.8, 1.2, nc)
    # mouth: upper and lower lip as curves
    my, mw = p["mouth_y"], p["mouth_w"] * 0.5
    lip = _col(skin * (1 - p["lip_mix"]) + np.array([175, 60, 70]) * p["lip_mix"])
    mx = fx + yaw * 0.5
    ss = [-1 + 2 * i / 12 for i in range(13)]
    mid = [(mx + s * mw, my - smile * s * s + smile * 0.4) for s in ss]
    top_c = [(x, y - p["lip_th"] * 0.5 * (1 - s * s)) for (x, y), s in zip(mid, ss)]
    bot_c = [(x, y + p["lip_th"] * (1 - s * s)) for (x, y), s in zip(mid, ss)]
    poly(top_c + bot_c[::-1], lip)
    line(mid, _col(skin * 0.3), 0.9)
    if p["mole"]:
        ell(fx + p["mole_x"] * a * 0.8, p["face_cy"] + p["mole_y"] * p["face_b"] * 0.5, p["mole_r"], p["mole_r"],
            _col((60, 38, 28)))
    if p["glasses"]:
        gr = p["eye_w"] * 0.5 + 3.5
        gc = _col(p["glass_col"])
        for side in (-1, 1):
            ex = fx + side * p["eye_dx"]
            if p["glass_round"]:
                ell(ex, ey, gr, gr * 0.75, outline=gc, width=p["glass_th"])
            else:
                cv.rect(ex - gr, ey - gr * 0.75, ex + gr, ey + gr * 0.75, outline=gc, width=p["glass_th"])
        line([(fx - p["eye_dx"] + gr, ey - 1), (fx + p["eye_dx"] - gr, ey - 1)], gc, p["glass_th"])
    img = img.reduce(S)

    # lighting, colour cast, shading, blur, noise
    arr = np.asarray(img, dtype=np.float32)
    mean = arr.mean()
    contrast = u(0.7, 1.2)
    bright = u(0.7, 1.25)
    cast = r.uniform(0.9, 1.1, 3).astype(np.float32)
    shade = 1 + np.float32(u(-0.25, 0.25)) * np.linspace(-1, 1, WIDTH, dtype=np.float32)[None, :, None]
    arr = ((arr - mean) * contrast + mean) * (bright * cast) * shade
    if r.uniform() < 0.05:
        arr = np.repeat(arr.mean(axis=2, keepdims=True), 3, axis=2)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if r.uniform() < 0.65:
        img = img.filter(ImageFilter.GaussianBlur(u(0.3, 1.4)))
    sigma = u(0, 9)
    if sigma > 0.5:
        arr = np.asarray(img, dtype=np.float32) + r.normal(0, sigma, (HEIGHT, WIDTH, 3)).astype(np.float32)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img


def render_jpeg(seed: int, gid: int, k: int, params: Optional[dict] = None) -> bytes:
    """Encoded JPEG bytes of image ``k`` of identity ``gid`` (deterministic)."""
    p = params if params is not None else identity_params(seed, gid)
    r = _rng(seed, _KIND_IMAGE, gid, k)
    img = _render(p, r)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(r.integers(35, 96)))
    return buf.getvalue()


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
             progress: Optional[Callable[[int], None]] = None, overwrite: bool = False) -> Dict:
    """Write a synthetic face data set into ``out_dir``; returns a summary dict.

    ``workers``: processes to render with (default: the CPUs, 0/1 = in this
    process).  ``progress(n)`` is called with each batch of images written.
    Refuses to write over an existing ``train``/``verify`` unless
    ``overwrite``, because left-over identities would change the index.
    """
    for name, v, lo in (("identities", identities, 1), ("images_per_identity", images_per_identity, 1),
                        ("verify_identities", verify_identities, 0), ("pairs", pairs, 0),
                        ("verify_images", verify_images, 1), ("seed", seed, 0)):
        if int(v) < lo:
            raise ArcbenchError(f"{name} must be >= {lo}, got {v}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("train", "verify"):
        if (out / sub).exists():
            if not overwrite:
                raise ArcbenchError(f"{sub}/ already exists; choose an empty folder or overwrite", out)
            shutil.rmtree(out / sub)
    t0 = time.perf_counter()
    seed = int(seed)
    train_names = [_train_name(i) for i in range(identities)]
    verify_names = [_verify_name(i) for i in range(verify_identities)]
    tasks = [(str(out / "train" / n), seed, i, [f"{k}.jpg" for k in range(images_per_identity)])
             for i, n in enumerate(train_names)]
    tasks += [(str(out / "verify" / n), seed, _VERIFY_OFFSET + i,
               [f"{n}_{k + 1:04d}.jpg" for k in range(verify_images)]) for i, n in enumerate(verify_names)]
    folds = make_pairs(verify_names, verify_images, pairs, seed) if verify_identities and pairs else None

    total = identities * images_per_identity + verify_identities * verify_images
    if workers is None:
        workers = _default_workers()
    if workers > 1 and len(tasks) > 1 and total >= 32:  # below that a pool costs more than it saves
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(min(workers, len(tasks))) as pool:
            for n in pool.imap_unordered(_write_identity, tasks, chunksize=max(1, len(tasks) // (workers * 8))):
                if progress:
                    progress(n)
    else:
        for t in tasks:
            n = _write_identity(t)
            if progress:
                progress(n)

    train_paths = [f"train/{n}/{k}.jpg" for n in train_names for k in range(images_per_identity)]
    train_labels = [i for i in range(identities) for _ in range(images_per_identity)]
    _index.write_annotation(out / "cls_train.txt", train_paths, train_labels)
    if folds is not None:
        atomic.write_text(out / "pairs.txt", format_pairs(folds, pairs))
    summary = dict(
        generator="arcbench.synth", version=GENERATOR_VERSION, seed=seed, width=WIDTH, height=HEIGHT,
        identities=identities, images_per_identity=images_per_identity, train_images=len(train_paths),
        verify_identities=verify_identities, verify_images=verify_images,
        verify_total=verify_identities * verify_images, pairs_per_fold=pairs if folds else 0, folds=10 if folds else 0,
        train=str(out / "train"), annotation=str(out / "cls_train.txt"), verify=str(out / "verify"),
        pairs_file=str(out / "pairs.txt") if folds else None, seconds=round(time.perf_counter() - t0, 2),
    )
    atomic.write_json(out / "synth.json", {k: v for k, v in summary.items()
                                           if k not in ("train", "annotation", "verify", "pairs_file", "seconds")})
    return summary


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
        generate(tmp, **spec, progress=progress)
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
