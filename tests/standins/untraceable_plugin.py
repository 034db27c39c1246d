"""A third-party-style backbone whose forward uses an operator ONNX has no translation for (SVD),
for the one-line export error (``--plugin untraceable_plugin``)."""
from __future__ import annotations

import torch
from torch import nn

from arcbench import hookimpl


class SvdNet(nn.Module):
    def __init__(self, embedding_size: int = 8, **_):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x):
        y = self.pool(self.conv(x)).flatten(2)          # (N, 8, 16)
        return torch.linalg.svd(y, full_matrices=False)[1]  # singular values: (N, 8)


@hookimpl
def register_backbones(register):
    register("svdnet", SvdNet, embedding_size=8)
