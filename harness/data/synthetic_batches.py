"""``--train-data synthetic``: random tensors made once on the device, no data path at all.

They measure pure compute throughput, so they stand in for a loader (same
``set_epoch``/``len``/iteration) and are never compared for accuracy.
"""
from __future__ import annotations

import torch

from ..errors import ArcbenchError

SYNTHETIC = "synthetic"


def is_synthetic(spec) -> bool:
    return isinstance(spec, str) and spec.strip().lower() == SYNTHETIC


class SyntheticBatches:
    """Random tensors made once on the device: pure compute throughput, no data path.

    Always labelled synthetic; never compare its accuracy with anything.
    """

    synthetic = True
    name = SYNTHETIC

    def __init__(self, batch_size: int, num_classes: int = 1000, steps_per_epoch: int = 100,
                 device=torch.device("cpu"), input_size: int = 112, seed: int = 0):
        if batch_size < 1 or num_classes < 1 or steps_per_epoch < 1:
            raise ArcbenchError("synthetic data needs batch_size, num_classes and steps_per_epoch >= 1")
        self.batch_size = int(batch_size)
        self.num_classes = int(num_classes)
        self.steps_per_epoch = int(steps_per_epoch)
        self.device = torch.device(device)
        self.input_size = int(input_size)
        self.bad_images = 0
        self.epoch = 0
        g = torch.Generator().manual_seed(int(seed))
        images = torch.rand(self.batch_size, 3, self.input_size, self.input_size, generator=g) * 2 - 1
        labels = torch.randint(0, self.num_classes, (self.batch_size,), generator=g, dtype=torch.int64)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        for _ in range(self.steps_per_epoch):
            yield self.images, self.labels

    def __repr__(self) -> str:
        return (f"SyntheticBatches(batch_size={self.batch_size}, num_classes={self.num_classes}, "
                f"steps_per_epoch={self.steps_per_epoch}, device={self.device})")
