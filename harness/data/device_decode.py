"""``--decode device``: JPEGs decoded on the card (torchvision's nvJPEG), for hosts short of cores.

Opt-in, never the default: nvJPEG's IDCT and chroma upsampling differ from
libjpeg-turbo by a few grey levels and the letterbox resize runs in torch's
bicubic, so the pixels are NOT the reference's (runs record ``decode: device``).

Workers then only read the file and check its header: a JPEG travels as its
bytes (:class:`EncodedBatch`); anything else (PNG, CMYK JPEG) is decoded on the
host as usual and travels as pixels.  A missing or unreadable file is a bad
image as always; a JPEG whose body turns out corrupt only shows on the card,
where it is a one-line error naming the file.
"""
from __future__ import annotations

import io
from typing import List, Optional

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ArcbenchError

#: the decoder the feed calls: ``decoder(list of uint8 byte tensors, device) -> list of CHW uint8``;
#: None: torchvision's ``decode_jpeg`` (tests put a host decoder here)
DECODER = None


def support(device) -> Optional[str]:
    """None when ``--decode device`` can run on ``device``, else the one-line reason it cannot."""
    if device.torch_type != "cuda":
        return (f"--decode device needs a CUDA card (torchvision's nvJPEG decoder); {device.name} has none "
                f"here: use --decode host")
    try:
        from torchvision.io import decode_jpeg  # noqa: F401  (optional: never a dependency)
    except Exception as exc:  # not installed, or built without the image extension
        return (f"--decode device needs torchvision's decode_jpeg, which cannot be imported here "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); use --decode host")
    return None


def check(device) -> None:
    why = support(device)
    if why:
        raise ArcbenchError(why)


class Encoded:
    """One sample for the card: the file's bytes (``data``, 1-D uint8) or host-decoded HWC pixels
    (``pixels``), the flip to apply, and the name errors should give."""

    __slots__ = ("data", "pixels", "flip", "name", "size")

    def __init__(self, data=None, pixels=None, flip: bool = False, name: str = "", size: int = 112):
        self.data, self.pixels, self.flip, self.name, self.size = data, pixels, bool(flip), name, int(size)


def read_sample(raw: bytes, size: int, flip: bool, name: str, host_decode) -> Encoded:
    """What a worker hands over with ``--decode device``: a plain JPEG's bytes, else host pixels.

    ``host_decode()`` -> HWC uint8 letterboxed (today's path) for what the card cannot decode."""
    try:
        with Image.open(io.BytesIO(raw)) as img:  # the header only: cheap
            gpu_ok = img.format == "JPEG" and img.mode in ("RGB", "L")
    except Exception:
        gpu_ok = False  # host_decode names the problem
    if gpu_ok:
        return Encoded(data=torch.frombuffer(bytearray(raw), dtype=torch.uint8), flip=flip, name=name, size=size)
    return Encoded(pixels=host_decode(), flip=flip, name=name, size=size)


class EncodedBatch:
    """A batch of :class:`Encoded` samples at ``size``; ``pin_memory()`` lets the DataLoader pin it."""

    def __init__(self, samples: List[Encoded]):
        self.samples = list(samples)
        self.size = self.samples[0].size if self.samples else 0

    def __len__(self) -> int:
        return len(self.samples)

    def pin_memory(self, *args) -> "EncodedBatch":
        for s in self.samples:
            if s.data is not None:
                s.data = s.data.pin_memory()
            else:
                s.pixels = s.pixels.pin_memory()
        return self


def letterbox_chw(img: torch.Tensor, size: int) -> torch.Tensor:
    """CHW uint8 -> ``[3, size, size]`` uint8: the reference's letterbox (keep the aspect ratio,
    centre on grey 128) with torch's antialiased bicubic in place of PIL's."""
    h, w = int(img.shape[1]), int(img.shape[2])
    if (w, h) == (size, size):
        return img
    scale = min(size / w, size / h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    small = F.interpolate(img[None].float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    small = small[0].round_().clamp_(0, 255).to(torch.uint8)
    canvas = torch.full((3, size, size), 128, dtype=torch.uint8, device=img.device)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[:, top:top + nh, left:left + nw] = small
    return canvas


def _torchvision_decoder(datas: List[torch.Tensor], device) -> List[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))


def decode_batch(batch: EncodedBatch, device) -> torch.Tensor:
    """``[N, size, size, 3]`` uint8 on ``device``: the JPEGs decoded there, flipped before the
    letterbox (as the reference augments), host-decoded samples copied as they are."""
    decoder = DECODER or _torchvision_decoder
    jpegs = [s for s in batch.samples if s.data is not None]
    decoded = {}
    if jpegs:
        try:
            images = decoder([s.data for s in jpegs], device)
        except Exception:  # one bad body fails the batch: find it
            images = []
            for s in jpegs:
                try:
                    images.extend(decoder([s.data], device))
                except Exception as exc:
                    raise ArcbenchError(f"cannot decode image on the device ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else ''}); --decode host "
                                        f"skips or reports bad images", s.name) from None
        decoded = {id(s): img for s, img in zip(jpegs, images)}
    out = []
    for s in batch.samples:
        if s.data is None:
            out.append(s.pixels.to(device, non_blocking=True).permute(2, 0, 1))
            continue
        img = decoded[id(s)]
        if s.flip:
            img = img.flip(-1)
        out.append(letterbox_chw(img, batch.size))
    if not out:
        return torch.empty(0, batch.size, batch.size, 3, dtype=torch.uint8, device=device)
    return torch.stack(out).permute(0, 2, 3, 1).contiguous()
