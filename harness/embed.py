"""Turning images into unit embeddings with a backbone on a device."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def embed_batch(model: torch.nn.Module, images: torch.Tensor, device=None, flip: bool = False,
                amp: bool = False, memory_format=None, to_host: bool = True) -> torch.Tensor:
    """L2-normalised embeddings (float32, on the host) for a CHW batch in [-1, 1].

    With ``flip`` the embedding of the mirrored image is added before normalising.
    ``memory_format``: converted on the device, after the copy (a pinned host batch stays pinned,
    so the copy stays asynchronous).  ``to_host=False`` leaves the embeddings on the device (a
    caller embedding many batches copies them once).
    """
    tdev = device.torch_device() if device is not None else images.device
    x = images.to(tdev, non_blocking=True)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    ctx = device.autocast(amp) if device is not None else torch.autocast("cpu", enabled=False)
    with ctx:
        out = model(x).float().flatten(1)
        if flip:
            out = out + model(torch.flip(x, dims=[3])).float().flatten(1)
    out = F.normalize(out, dim=1)
    return out.cpu() if to_host else out
