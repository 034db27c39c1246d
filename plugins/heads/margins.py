"""Additive-margin softmax heads: ArcFace, CosFace and the combined margin.

All three share one form: the class-weight and embedding vectors are
L2-normalised, the target logit ``cos(theta)`` is replaced by a margin
function of theta, and everything is multiplied by the scale ``s``.  Under
autocast the cosine matmul runs in the autocast dtype (tensor cores; for 2M
classes it is most of the head's FLOPs), as insightface's Partial FC does; the
normalisation before it, and the margin and cross-entropy after it, stay fp32:
``acos`` and ``sqrt`` near +/-1 are where half precision breaks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from arcbench import hookimpl


def autocast_dtype(tensor: torch.Tensor):
    """The dtype autocast runs a matmul in on ``tensor``'s device type, or None when autocast is off."""
    kind = tensor.device.type
    try:
        return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    except (AttributeError, TypeError, RuntimeError):  # torch < 2.4: per-backend functions
        if kind == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        if kind == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        return None


def cosine_matmul(x: torch.Tensor, w: torch.Tensor, dtype=None) -> torch.Tensor:
    """``x @ w.T`` of normalised fp32 rows, run in ``dtype`` when given (the caller's AMP dtype), in fp32."""
    if dtype is None or dtype == torch.float32:
        return F.linear(x, w)
    return F.linear(x.to(dtype), w.to(dtype)).float()


def _autocast_off(tensor: torch.Tensor):
    try:
        return torch.autocast(device_type=tensor.device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        import contextlib
        return contextlib.nullcontext()


# ------------------------------------------------------- target-logit functions
# Shared by the heads below and by the sharded Partial FC head (partial_fc.py).
# Each maps the fp32 target cosines ``cos_t`` to the margin-adjusted target logit
# (before the scale ``s``).

def arcface_target(cos_t: torch.Tensor, m: float, easy_margin: bool = False) -> torch.Tensor:
    """cos(theta + m); past theta = pi - m, falls back to cos(theta) - sin(pi - m) * m."""
    cos_m, sin_m = math.cos(m), math.sin(m)
    # sqrt'(0) is infinite: keep |cos| a hair below 1 here so an embedding that
    # coincides with its class centre yields finite (not NaN) gradients.
    c = cos_t.clamp(-1.0 + 1e-7, 1.0 - 1e-7)
    sin_t = torch.sqrt(1.0 - c * c)
    phi = cos_t * cos_m - sin_t * sin_m
    if easy_margin:
        return torch.where(cos_t > 0, phi, cos_t)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    return torch.where(cos_t > th, phi, cos_t - mm)


def cosface_target(cos_t: torch.Tensor, m: float) -> torch.Tensor:
    """cos(theta) - m."""
    return cos_t - m


def combined_target(cos_t: torch.Tensor, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0) -> torch.Tensor:
    """cos(m1 * theta + m2) - m3 (insightface's combined margin)."""
    theta = torch.acos(cos_t.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    return torch.cos(m1 * theta + m2) - m3



class MarginHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int, s: float = 64.0):
        super().__init__()
        self.in_features, self.num_classes, self.s = in_features, num_classes, float(s)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor, dtype=None) -> torch.Tensor:
        """fp32 cosines; the matmul runs in ``dtype`` when given."""
        return cosine_matmul(F.normalize(embeddings.float()), F.normalize(self.weight.float()), dtype)

    def target_logit(self, cos_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dtype = autocast_dtype(embeddings)  # the caller's AMP dtype: only the matmul runs in it
        with _autocast_off(embeddings):
            cos = self.cosine(embeddings, dtype).clamp(-1.0, 1.0)
            idx = labels.view(-1, 1).long()
            cos_t = cos.gather(1, idx)
            logits = cos.scatter(1, idx, self.target_logit(cos_t))
            return logits * self.s

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, s={self.s}"


class ArcFace(MarginHead):
    """cos(theta + m); past theta = pi - m, falls back to cos(theta) - sin(pi - m) * m."""

    def __init__(self, in_features, num_classes, s=64.0, m=0.5, easy_margin=False):
        super().__init__(in_features, num_classes, s)
        self.m, self.easy_margin = float(m), bool(easy_margin)
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def target_logit(self, cos_t):
        return arcface_target(cos_t, self.m, self.easy_margin)


class CosFace(MarginHead):
    """cos(theta) - m."""

    def __init__(self, in_features, num_classes, s=64.0, m=0.35):
        super().__init__(in_features, num_classes, s)
        self.m = float(m)

    def target_logit(self, cos_t):
        return cosface_target(cos_t, self.m)


class CombinedMargin(MarginHead):
    """cos(m1 * theta + m2) - m3 (insightface's combined margin)."""

    def __init__(self, in_features, num_classes, s=64.0, m1=1.0, m2=0.5, m3=0.0):
        super().__init__(in_features, num_classes, s)
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    def target_logit(self, cos_t):
        return combined_target(cos_t, self.m1, self.m2, self.m3)


@hookimpl
def register_heads(register):
    # params: what the command line may set (--margin-s, --margin-m ...); easy_margin and the
    # combined margin's m1/m2/m3 are left at their defaults
    register("arcface", ArcFace, description="ArcFace additive angular margin: cos(theta + m)", params=("s", "m"))
    register("cosface", CosFace, description="CosFace additive cosine margin: cos(theta) - m", params=("s", "m"))
    register("combined", CombinedMargin, description="combined margin: cos(m1*theta + m2) - m3", params=("s",))
