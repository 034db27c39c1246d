"""``torch_sdaa.amp``: ``autocast()`` and ``GradScaler()`` as the model zoo calls them."""
from __future__ import annotations

import contextlib

import torch

from . import MODE, record


_UNSET = object()


def _given(**kwargs) -> dict:
    """The keywords the caller actually passed (defaults are sentinels), so tests see the call as made."""
    return {k: v for k, v in kwargs.items() if v is not _UNSET}


if MODE == "nodtype":
    @contextlib.contextmanager
    def autocast(enabled=_UNSET, cache_enabled=_UNSET):
        record("autocast", **_given(enabled=enabled, cache_enabled=cache_enabled))
        yield
else:
    @contextlib.contextmanager
    def autocast(enabled=_UNSET, dtype=_UNSET, cache_enabled=_UNSET):
        record("autocast", **_given(enabled=enabled, dtype=dtype, cache_enabled=cache_enabled))
        yield


class GradScaler(torch.amp.GradScaler):
    """A real loss scaler (torch's, on the host) that records what the harness asks of it."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        record("GradScaler", **({} if enabled is True else {"enabled": enabled}))  # the model zoo: GradScaler()
        super().__init__("cpu", init_scale=init_scale, growth_factor=growth_factor,
                         backoff_factor=backoff_factor, growth_interval=growth_interval, enabled=enabled)

    def scale(self, outputs):
        record("GradScaler.scale")
        return super().scale(outputs)

    def step(self, optimizer, *args, **kwargs):
        record("GradScaler.step")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale=None):
        record("GradScaler.update")
        return super().update(new_scale)
