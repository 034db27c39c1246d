"""MobileFaceNet (Chen et al. 2018), laid out so the reference weights load strictly.

Module names and shapes follow the state dict of the reference
``arcface_mobilefacenet.pth`` (after its ``arcface.`` prefix is stripped):
that file is the ground truth for the SDAA port, so the attribute names here
are part of the checkpoint format and must not be renamed.
"""
from __future__ import annotations

from torch import nn

from arcbench import hookimpl

from ._init import init_conv_bn


class ConvBNPReLU(nn.Module):
    """conv (no bias) -> BN -> PReLU; keys ``conv``, ``bn``, ``prelu``."""

    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)

    def forward(self, x):
        return self.prelu(self.bn(self.conv(x)))


class ConvBN(nn.Module):
    """A linear (activation-free) conv block; keys ``conv``, ``bn``."""

    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class DepthWise(nn.Module):
    """Inverted residual: 1x1 expand to ``hidden``, 3x3 depthwise (strided), 1x1 linear project."""

    def __init__(self, cin, cout, hidden, stride=1, residual=False):
        super().__init__()
        self.conv = ConvBNPReLU(cin, hidden)
        self.conv_dw = ConvBNPReLU(hidden, hidden, 3, stride, 1, groups=hidden)
        self.project = ConvBN(hidden, cout)
        self.residual = residual

    def forward(self, x):
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class ResidualStack(nn.Module):
    """``num_blocks`` shape-preserving inverted residuals under ``.model.<i>``."""

    def __init__(self, channels, num_blocks, hidden):
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(channels, channels, hidden, residual=True)
                                     for _ in range(num_blocks)])

    def forward(self, x):
        return self.model(x)


class MobileFaceNet(nn.Module):
    """112x112x3 -> 128-d embedding, about 1.0M parameters and 0.22 GMACs."""

    def __init__(self, embedding_size: int = 128):
        super().__init__()
        self.conv1 = ConvBNPReLU(3, 64, 3, 2, 1)                       # 112 -> 56
        self.conv2_dw = ConvBNPReLU(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = DepthWise(64, 64, 128, stride=2)                # 56 -> 28
        self.conv_3 = ResidualStack(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, 256, stride=2)               # 28 -> 14
        self.conv_4 = ResidualStack(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, 512, stride=2)              # 14 -> 7
        self.conv_5 = ResidualStack(128, 2, 256)
        self.sep = nn.Conv2d(128, 512, 1, bias=False)
        self.sep_bn = nn.BatchNorm2d(512)
        self.prelu = nn.PReLU(512)
        self.GDC_dw = nn.Conv2d(512, 512, 7, groups=512, bias=False)   # global depthwise 7x7 -> 1x1
        self.GDC_bn = nn.BatchNorm2d(512)
        self.features = nn.Conv2d(512, embedding_size, 1, bias=False)
        self.last_bn = nn.BatchNorm2d(embedding_size)
        self.embedding_size = embedding_size
        init_conv_bn(self, lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))

    def forward(self, x):
        x = self.conv2_dw(self.conv1(x))
        x = self.conv_3(self.conv_23(x))
        x = self.conv_4(self.conv_34(x))
        x = self.conv_5(self.conv_45(x))
        x = self.prelu(self.sep_bn(self.sep(x)))
        x = self.GDC_bn(self.GDC_dw(x))
        x = self.last_bn(self.features(x))
        # flatten (not view): a channels_last (N, C, 1, 1) tensor is not view-compatible everywhere
        return x.flatten(1)


def mobilefacenet(embedding_size: int = 128, dropout: float = 0.0, **kwargs) -> MobileFaceNet:
    """Factory.  ``dropout`` is accepted and ignored so one config can drive every backbone
    (MobileFaceNet has no dropout layer); any other unknown keyword is a TypeError."""
    if kwargs:
        raise TypeError(f"mobilefacenet() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
    return MobileFaceNet(embedding_size)


@hookimpl
def register_backbones(register):
    register("mobilefacenet", mobilefacenet, embedding_size=128, input_size=112, margin_scale=32.0,
             fold_bn=True)
