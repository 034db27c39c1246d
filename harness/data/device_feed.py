"""Batches onto the bound card: the copy, the normalisation, and the next batch ahead.

Loaders hand over ``[N, H, W, 3]`` uint8 (a quarter of float32's bytes); here it
is copied to the card and scaled there with :func:`arcbench.data.preprocess.normalise`
(bit-identical to the reference's host arithmetic), as a channels_last view.

On a device with streams (:meth:`arcbench.device.Device.side_stream`) the feed
holds batch N+1 on the card: when the loop takes batch N, the compute stream is
made to wait for N's copy event and N+1's copy is issued on the side stream, so
it runs while step N computes.  Without streams (the CPU) each batch is placed
when it is taken, as before.  Batches already on the device in float (synthetic
data) only get the memory format the model wants.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

import torch

from .preprocess import normalise, normalise_table
from .device_decode import EncodedBatch, decode_batch

Batch = Tuple[torch.Tensor, torch.Tensor]


class DeviceFeed:
    """Iterates ``(images float32 NCHW on the card, labels on the card)`` over ``batches``."""

    def __init__(self, batches: Iterable[Batch], device, channels_last: bool = True, overlap: bool = True):
        self.src: Iterator[Batch] = iter(batches)
        self.device = device
        self.tdev = device.torch_device()
        self.channels_last = bool(channels_last)
        self.table = normalise_table().to(self.tdev)
        self.stream = device.side_stream() if overlap else None
        self._ahead: Optional[tuple] = None
        self._started = False

    @property
    def overlaps(self) -> bool:
        """Whether copies run on a side stream, ahead of the step that uses them."""
        return self.stream is not None

    def place(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        """Copy one host batch to the card and normalise it there (on the current stream)."""
        if isinstance(images, EncodedBatch):  # --decode device: JPEG bytes, decoded here
            images = decode_batch(images, self.tdev)
        images = images.to(self.tdev, non_blocking=True)
        labels = labels.to(self.tdev, non_blocking=True)
        if images.dtype == torch.uint8:
            images = normalise(images, self.table, self.channels_last)
        else:  # float batches made on the device (synthetic): only the layout
            images = images.contiguous(memory_format=torch.channels_last if self.channels_last
                                       else torch.contiguous_format)
        return images, labels

    def _issue(self) -> Optional[tuple]:
        """Take the next host batch and start its copy on the side stream; None at the end."""
        try:
            images, labels = next(self.src)
        except StopIteration:
            return None
        with self.device.stream_scope(self.stream):
            batch = self.place(images, labels)
        return batch, self.device.record_event(self.stream)

    def __iter__(self) -> "DeviceFeed":
        return self

    def __next__(self) -> Batch:
        if self.stream is None:
            return self.place(*next(self.src))
        if not self._started:
            self._started = True
            self._ahead = self._issue()
        if self._ahead is None:
            raise StopIteration
        batch, event = self._ahead
        self.device.wait_event(event, batch)  # this step's compute runs after its copy
        self._ahead = self._issue()  # the next copy overlaps this step
        return batch
