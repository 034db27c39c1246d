"""Improved ResNets (IResNet, Duta et al.) as used by insightface's arcface_torch.

Attribute names, BN eps and layer shapes follow arcface_torch, so its released
``backbone.pth`` files load with ``strict=True``: that compatibility is the
point of this module, so do not rename anything.  Each block is pre-activation
style: BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus a 1x1
strided projection shortcut on the first block of every stage.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from arcbench import hookimpl

from ._init import init_conv_bn, normal_01

LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    spatial = 7 * 7

    def __init__(self, layers: Sequence[int], embedding_size: int = 512, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            setattr(self, f"layer{i}", self._make_layer(inplanes, planes, blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.spatial, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-05)
        self.embedding_size = embedding_size
        # arcface_torch keeps the embedding BN's scale fixed at 1.
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False
        init_conv_bn(self, normal_01)

    @staticmethod
    def _make_layer(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        # Every stage halves the resolution, so its first block always needs a projection.
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, 2, bias=False),
                                   nn.BatchNorm2d(planes, eps=1e-05))
        return nn.Sequential(IBasicBlock(inplanes, planes, 2, downsample),
                             *[IBasicBlock(planes, planes) for _ in range(1, blocks)])

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))

#: the reference trains every iresnet with dropout 0.5 before the embedding layer (its
#: ``dropout_keep_prob=0.5`` is used as the drop probability); arcface_torch uses 0
REFERENCE_DROPOUT = 0.5


def _factory(name: str):
    layers = LAYERS[name]

    def build(embedding_size: int = 512, dropout: float = REFERENCE_DROPOUT, **kwargs) -> IResNet:
        if kwargs:
            raise TypeError(f"{name}() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        return IResNet(layers, embedding_size=embedding_size, dropout=dropout)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name}: IResNet with stage depths {list(layers)} (arcface_torch key layout)."
    return build


iresnet18 = _factory("iresnet18")
iresnet34 = _factory("iresnet34")
iresnet50 = _factory("iresnet50")
iresnet100 = _factory("iresnet100")
iresnet200 = _factory("iresnet200")


@hookimpl
def register_backbones(register):
    for name in LAYERS:
        register(name, globals()[name], embedding_size=512, input_size=112, margin_scale=64.0, fold_bn=True)
