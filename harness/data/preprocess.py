"""Image preprocessing exactly as the reference trained with.

RGB, letterbox to the input size keeping the aspect ratio (BICUBIC), pasted
centred on a (128, 128, 128) canvas, scaled to [-1, 1], CHW.  Getting this
wrong costs accuracy silently, so it lives in one place.

Training hands the letterboxed image over as uint8 HWC (:func:`load_uint8`, a
quarter of float32's bytes) and scales it on the device with :func:`normalise`:
a gather from the 256 values :func:`to_array`'s own float32 arithmetic gives
each byte, so the result is bit-identical to it on any device.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ArcbenchError

Source = Union[str, "os.PathLike[str]", bytes]


def open_image(src: Source, size: int = 112, what: str = "", draft: bool = False) -> Image.Image:
    """Decode to RGB.

    ``draft=True`` lets libjpeg decode a big JPEG at a reduced DCT scale (1/2, 1/4,
    1/8, never below ``size``): faster, but NOT pixel-identical to the reference
    (a 250x250 LFW-size image differs by up to 11 grey levels after the letterbox),
    so it is off by default and never used by training or evaluation.
    """
    label = what or (src if not isinstance(src, bytes) else "<image bytes>")
    try:
        img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        if draft and img.format == "JPEG":
            img.draft("RGB", (size, size))
        img.load()
    except FileNotFoundError:
        raise ArcbenchError("image not found", label) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ArcbenchError(f"cannot decode image: {exc}", label) from None
    if img.mode != "RGB":
        img = img.convert("RGB")  # grayscale, RGBA, CMYK, palette
    return img


def letterbox(img: Image.Image, size: int = 112) -> Image.Image:
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = min(size / w, size / h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    canvas = Image.new("RGB", (size, size), (128, 128, 128))
    canvas.paste(img.resize((nw, nh), Image.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
    return canvas


def _scale(arr: np.ndarray) -> np.ndarray:
    """The reference's arithmetic, float32 throughout (a Python float does not upcast)."""
    return (arr / 255.0 - 0.5) / 0.5


def to_array(img: Image.Image) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [-1, 1]."""
    arr = _scale(np.asarray(img, dtype=np.float32))
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def to_uint8(img: Image.Image) -> np.ndarray:
    """HWC uint8, as PIL holds it (writable and contiguous, so torch can share it)."""
    return np.array(img, dtype=np.uint8)


def normalise_table() -> torch.Tensor:
    """What :func:`to_array` makes of each byte value 0..255: float32, computed with its own
    numpy arithmetic (a device's ``x / 255`` may round differently, e.g. via a reciprocal)."""
    return torch.from_numpy(_scale(np.arange(256, dtype=np.float32)))


def normalise(batch: torch.Tensor, table: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 -> ``[N, 3, H, W]`` float32 in [-1, 1], bit-identical to
    :func:`to_array`, on whatever device ``batch`` and ``table`` are.  The result is a
    channels_last permute of the gathered HWC values (no transpose copy);
    ``channels_last=False`` makes it contiguous NCHW."""
    # index_select with int32 indices: a plain gather, several times faster than long indexing
    out = table.index_select(0, batch.reshape(-1).to(torch.int32)).view(batch.shape).permute(0, 3, 1, 2)
    return out if channels_last else out.contiguous()


def _prepared(src: Source, size: int, flip: bool, what: str) -> Image.Image:
    img = open_image(src, size, what)
    if flip:
        # before the letterbox, as the reference augments: with an odd margin the centring
        # rounds down, so flipping afterwards would move the face by a pixel
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return letterbox(img, size)


def load_tensor(src: Source, size: int = 112, flip: bool = False, what: str = "") -> torch.Tensor:
    """CHW float32 in [-1, 1]: what evaluation and ``verify`` feed the model."""
    return torch.from_numpy(to_array(_prepared(src, size, flip, what)))


def load_uint8(src: Source, size: int = 112, flip: bool = False, what: str = "") -> torch.Tensor:
    """HWC uint8 of the same pixels as :func:`load_tensor`: what training workers hand over."""
    return torch.from_numpy(to_uint8(_prepared(src, size, flip, what)))
