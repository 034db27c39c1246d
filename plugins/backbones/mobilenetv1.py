"""MobileNetV1 adapted to 112x112 faces, as in the arcface-pytorch reference project.

The classic depthwise-separable stages (first conv at stride 1, total stride
16, so 112 -> 7), then a 1x1 reduction to 512 with PReLU, and the
insightface-style "output layer E": BN, dropout, flatten, a linear layer on
the whole 7x7 map, BatchNorm1d.  Attribute names match the reference
project's ``mobilenet.py`` so weights trained there load strictly.
"""
from __future__ import annotations

import torch
from torch import nn

from arcbench import hookimpl

from ._init import init_conv_bn, normal_01


def _conv_bn(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6(inplace=True))


def _conv_dw(cin, cout, stride):
    """Depthwise 3x3 (carries the stride) then pointwise 1x1, each with BN + ReLU6."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True),
    )


class MobileNetV1(nn.Module):
    spatial = 7 * 7

    def __init__(self, embedding_size: int = 512, dropout: float = 0.5):
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 32, 1), _conv_dw(32, 64, 1),
            _conv_dw(64, 128, 2), _conv_dw(128, 128, 1),          # 112 -> 56
            _conv_dw(128, 256, 2), _conv_dw(256, 256, 1),         # 56 -> 28
        )
        self.stage2 = nn.Sequential(_conv_dw(256, 512, 2), *[_conv_dw(512, 512, 1) for _ in range(5)])  # -> 14
        self.stage3 = nn.Sequential(_conv_dw(512, 1024, 2), _conv_dw(1024, 1024, 1))                  # -> 7
        self.sep = nn.Conv2d(1024, 512, 1, bias=False)
        self.sep_bn = nn.BatchNorm2d(512)
        self.prelu = nn.PReLU(512)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout)
        self.linear = nn.Linear(512 * self.spatial, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-05)
        self.embedding_size = embedding_size
        init_conv_bn(self, normal_01)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(x)))
        x = self.prelu(self.sep_bn(self.sep(x)))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.linear(x))


def mobilenetv1(embedding_size: int = 512, dropout: float = 0.5, **kwargs) -> MobileNetV1:
    """Factory; the default dropout 0.5 is what the reference project trains with."""
    if kwargs:
        raise TypeError(f"mobilenetv1() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
    return MobileNetV1(embedding_size, dropout)


@hookimpl
def register_backbones(register):
    register("mobilenetv1", mobilenetv1, embedding_size=512, input_size=112, margin_scale=64.0, fold_bn=True)
