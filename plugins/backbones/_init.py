"""The weight initialisation the built-in backbones share (not a plugin: no hooks).

Each reference project initialises its convolutions its own way and every
BatchNorm2d to the identity; the order of the draws is the module order, so
one seed gives the same weights as the loops this replaces.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def init_conv_bn(model: nn.Module, conv_init: Callable[[torch.Tensor], object]) -> None:
    """``conv_init(weight)`` on every Conv2d; weight 1, bias 0 on every BatchNorm2d."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            conv_init(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def normal_01(weight: torch.Tensor) -> None:
    """N(0, 0.1): the arcface_torch / arcface-pytorch convolution init."""
    nn.init.normal_(weight, 0, 0.1)
