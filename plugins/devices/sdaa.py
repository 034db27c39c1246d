"""Tecorigin SDAA accelerators through the optional ``torch_sdaa`` SDK.

``torch_sdaa`` is not on PyPI, so it is imported lazily: without it the
device is registered but reports ``unavailable: torch_sdaa is not installed``.
Importing ``torch_sdaa`` adds ``torch.sdaa`` (like ``torch.cuda``) and the
``tccl`` collective backend.  ``SDAA_VISIBLE_DEVICES`` selects cards the same
way ``CUDA_VISIBLE_DEVICES`` does; the runtime reads it, and we report it.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional, Tuple

import torch

from arcbench import hookimpl
from arcbench.device import Device


def _sdk():
    """``(torch_sdaa module, torch.sdaa namespace)``, or raise ImportError."""
    mod = importlib.import_module("torch_sdaa")
    ns = getattr(torch, "sdaa", None) or getattr(mod, "sdaa", None) or mod
    return mod, ns


class SDAADevice(Device):
    name = "sdaa"
    dist_backend = "tccl"
    amp_dtype = torch.float16
    torch_type = "sdaa"

    def is_available(self) -> Tuple[bool, str]:
        try:
            _, ns = _sdk()
        except ImportError:
            return False, "unavailable: torch_sdaa is not installed"
        except Exception as exc:  # a broken SDK install
            return False, f"unavailable: torch_sdaa failed to import: {exc}"
        try:
            if hasattr(ns, "is_available") and not ns.is_available():
                return False, "unavailable: torch_sdaa found no SDAA card"
        except Exception as exc:
            return False, f"unavailable: {exc}"
        return True, ""

    def device_count(self) -> int:
        return int(_sdk()[1].device_count())

    def torch_device(self, local_rank: int = 0) -> torch.device:
        return torch.device("sdaa", local_rank)

    def set_device(self, local_rank: int = 0) -> None:
        _sdk()[1].set_device(local_rank)

    def _amp(self):
        """The SDK's AMP module: ``torch_sdaa.amp`` (imported if it is a lazy submodule) or ``torch.sdaa.amp``."""
        mod, ns = _sdk()
        amp = getattr(mod, "amp", None)
        if amp is None:
            try:
                amp = importlib.import_module("torch_sdaa.amp")
            except ImportError:
                amp = getattr(ns, "amp", None)
        return amp

    def autocast(self, enabled: bool = True, dtype=None):
        if not enabled:
            return super().autocast(False)
        dtype = dtype or self.amp_dtype
        amp = self._amp()
        if amp is not None and hasattr(amp, "autocast"):
            return amp.autocast(enabled=True, dtype=dtype)
        return torch.autocast(device_type="sdaa", dtype=dtype)

    def grad_scaler(self, enabled: bool = True, dtype=None):
        if not enabled or (dtype or self.amp_dtype) != torch.float16:
            return super().grad_scaler(False)
        amp = self._amp()
        if amp is not None and hasattr(amp, "GradScaler"):
            return amp.GradScaler()
        return torch.amp.GradScaler("sdaa")

    def synchronize(self) -> None:
        _sdk()[1].synchronize()

    def memory_stats(self) -> dict:
        ns = _sdk()[1]
        peak = getattr(ns, "max_memory_allocated", None)
        alloc = getattr(ns, "memory_allocated", None)
        return {"peak_memory": peak() if peak else None, "allocated": alloc() if alloc else None}

    def reset_peak_memory(self) -> None:
        fn = getattr(_sdk()[1], "reset_peak_memory_stats", None)
        if fn:
            fn()

    def device_name(self, local_rank: int = 0) -> str:
        fn = getattr(_sdk()[1], "get_device_name", None)
        return fn(local_rank) if fn else "SDAA"

    def peak_flops(self, dtype: torch.dtype = torch.float32) -> Optional[float]:
        return None  # no public table; MFU is reported as null

    def seed(self, n: int) -> None:
        torch.manual_seed(n)
        fn = getattr(_sdk()[1], "manual_seed_all", None) if self.is_available()[0] else None
        if fn:
            fn(n)

    def describe(self) -> dict:
        info = super().describe()
        info["visible_devices"] = os.environ.get("SDAA_VISIBLE_DEVICES")
        if info["available"]:
            mod, ns = _sdk()
            info["torch_sdaa"] = getattr(mod, "__version__", None)
            for attr in ("sdaa_runtime_version", "driver_version", "tccl_version"):
                fn = getattr(ns, attr, None) or getattr(mod, attr, None)
                if fn is not None:
                    info[attr] = fn() if callable(fn) else fn
            info["device_count"] = self.device_count()
        return info


@hookimpl
def register_devices(register):
    register(SDAADevice())
