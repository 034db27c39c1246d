"""The device contract that device plugins implement.

A :class:`Device` hides everything that differs between accelerators: how to
select a card, which collective backend to use, what AMP means, how to wait
for queued work (needed before every timer read) and how to read memory.
"""
from __future__ import annotations

import contextlib
import os
import platform
from typing import Optional, Tuple

import torch


class Device:
    name: str = ""
    dist_backend: str = "gloo"
    #: dtype autocast uses when AMP is on
    amp_dtype: torch.dtype = torch.bfloat16
    #: the ``torch.device`` type string
    torch_type: str = "cpu"
    plugin: str = ""

    def is_available(self) -> Tuple[bool, str]:
        """``(True, "")`` or ``(False, reason)``; never raises."""
        return True, ""

    def device_count(self) -> int:
        return 1

    def torch_device(self, local_rank: int = 0) -> torch.device:
        return torch.device(self.torch_type)

    def set_device(self, local_rank: int = 0) -> None:
        """Bind this process to its card (no-op for host devices)."""

    def autocast(self, enabled: bool = True, dtype: Optional[torch.dtype] = None):
        if not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_type, dtype=dtype or self.amp_dtype)

    def grad_scaler(self, enabled: bool = True, dtype: Optional[torch.dtype] = None):
        """A GradScaler when fp16 AMP needs one; otherwise a disabled scaler."""
        return _NoScaler()

    def synchronize(self) -> None:
        """Wait for all queued work; call before every timer read."""

    def memory_stats(self) -> dict:
        """``{"peak_memory": bytes or None, "allocated": bytes or None}``."""
        return {"peak_memory": None, "allocated": None}

    def reset_peak_memory(self) -> None:
        pass

    def device_name(self, local_rank: int = 0) -> str:
        return platform.processor() or platform.machine()

    def peak_flops(self, dtype: torch.dtype = torch.float32) -> Optional[float]:
        """Peak FLOP/s for ``dtype``, or ``None`` when unknown."""
        return None

    def seed(self, n: int) -> None:
        torch.manual_seed(n)

    def describe(self) -> dict:
        ok, reason = self.is_available()
        return {
            "device": self.name,
            "available": ok,
            "reason": reason,
            "device_name": self.device_name() if ok else None,
            "dist_backend": self.dist_backend,
            "amp_dtype": str(self.amp_dtype).replace("torch.", ""),
            "torch": torch.__version__,
        }

    def info(self) -> dict:
        """The row ``arcbench devices`` prints."""
        ok, reason = self.is_available()
        return {
            "name": self.name,
            "available": ok,
            "reason": reason,
            "dist_backend": self.dist_backend,
            "amp_dtype": str(self.amp_dtype).replace("torch.", ""),
            "device_name": self.device_name() if ok else None,
            "plugin": self.plugin,
        }

    def __repr__(self) -> str:
        return f"<Device {self.name}>"


class _NoScaler:
    """Stands in for GradScaler where no loss scaling is needed (fp32, bf16)."""

    def is_enabled(self) -> bool:
        return False

    def get_scale(self) -> float:
        return 1.0

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer) -> None:
        pass

    def step(self, optimizer):
        return optimizer.step()

    def update(self, new_scale=None) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state) -> None:
        pass


def cpu_model() -> str:
    """The CPU model string, for system descriptions."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
