"""One synthetic face: an identity's fixed look, then one photograph of it.

Every identity draws its own face parameters (shape, skin, eyes, brows, nose,
mouth, hair, ears, glasses, beard, moles); every image then adds expression,
pose, scale, shift, background, lighting, blur, noise and JPEG quality on top,
so a model has to learn the identity rather than the pixels.  Images are
96x112 (width x height) like the reference's aligned crops, so the letterbox
path is exercised exactly as with real data.

Each image's RNG is consumed in one fixed order (pose and expression, then
background, then lighting and noise, then JPEG quality); the drawing layers in
between (:mod:`arcbench.data.face_drawing`) take no random numbers.  That
order is what keeps the bytes stable: change it and
:data:`~arcbench.data.synth.GENERATOR_VERSION` must go up.
"""
from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np
from PIL import Image, ImageFilter

from .face_drawing import HEIGHT, SUPERSAMPLE, WIDTH, Canvas, FaceLayers, Shot

_KIND_IDENTITY, _KIND_IMAGE, _KIND_PAIRS = 1, 2, 3


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


# ---------------------------------------------------------------- one image
def _draw_shot(p: dict, r: np.random.Generator) -> Shot:
    """The image's first random numbers, in this order."""
    u = r.uniform
    ang, sc, tx, ty = math.radians(u(-11, 11)), u(0.88, 1.12), u(-5, 5), u(-5, 5)
    yaw = u(-4.5, 4.5)
    smile = p["smile"] + r.normal(0, 1.3)
    eye_open = u(0.7, 1.1)
    brow_up = r.normal(0, 1.0)
    gaze = u(-1.2, 1.2)
    return Shot(ang, sc, tx, ty, yaw, smile, eye_open, brow_up, gaze)


def _background(r: np.random.Generator) -> Image.Image:
    """A two-colour ramp at supersampled size; muted like real crops (grey level plus some colour)."""
    u = r.uniform
    grey = u(40, 215)
    c0, c1 = (grey + (r.uniform(20, 235, 3) - grey) * u(0.15, 0.7) for _ in range(2))
    t = np.linspace(0, 1, 8, dtype=np.float32)[:, None]
    ramp = (c0 * (1 - t) + c1 * t).astype(np.uint8)[None] if r.uniform() < 0.5 else \
        (c0 * (1 - t) + c1 * t).astype(np.uint8)[:, None]
    size = (WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE)
    return Image.fromarray(np.ascontiguousarray(ramp), "RGB").resize(size, Image.BILINEAR)


def _photograph(img: Image.Image, r: np.random.Generator) -> Image.Image:
    """Lighting, colour cast, shading, sometimes greyscale, blur and noise: the camera's part."""
    u = r.uniform
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


def _render(p: dict, r: np.random.Generator) -> Image.Image:
    """Draw one image of identity ``p`` with nuisance drawn from ``r``."""
    shot = _draw_shot(p, r)
    img = _background(r)
    cv = Canvas(img, shot.ang, shot.sc, shot.tx, shot.ty, p["face_cx"], 60.0)
    FaceLayers(cv, p, shot).draw()
    return _photograph(img.reduce(SUPERSAMPLE), r)


def render_jpeg(seed: int, gid: int, k: int, params: Optional[dict] = None) -> bytes:
    """Encoded JPEG bytes of image ``k`` of identity ``gid`` (deterministic)."""
    p = params if params is not None else identity_params(seed, gid)
    r = _rng(seed, _KIND_IMAGE, gid, k)
    img = _render(p, r)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(r.integers(35, 96)))
    return buf.getvalue()
