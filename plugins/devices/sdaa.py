"""Tecorigin SDAA accelerators through the optional ``torch_sdaa`` SDK.

``torch_sdaa`` is not on PyPI, so it is imported lazily: without it the
device is registered but reports ``unavailable: torch_sdaa is not installed``.
Importing ``torch_sdaa`` adds ``torch.sdaa`` (like ``torch.cuda``) and the
``tccl`` collective backend.  ``SDAA_VISIBLE_DEVICES`` selects cards the same
way ``CUDA_VISIBLE_DEVICES`` does; the runtime reads it, and we report it.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Optional, Tuple

import torch

from arcbench import hookimpl
from arcbench.device import AcceleratorDevice
from arcbench.errors import ArcbenchError


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send what an import prints to stderr: SDKs print version banners, and
    ``arcbench devices --json`` must stay valid JSON on stdout."""
    sys.stdout.flush()
    saved = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)  # banners printed from C go to the process's fd 1
    except OSError:
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 1)
            os.close(saved)


def _sdk():
    """``(torch_sdaa module, torch.sdaa namespace)``, or raise ImportError."""
    mod = sys.modules.get("torch_sdaa")
    if mod is None:
        with _stdout_to_stderr():
            mod = importlib.import_module("torch_sdaa")
    ns = getattr(torch, "sdaa", None) or getattr(mod, "sdaa", None) or mod
    return mod, ns


class SDAADevice(AcceleratorDevice):
    name = "sdaa"
    auto_priority = 30  # the accelerator arcbench qualifies: preferred when present
    dist_backend = "tccl"
    amp_dtype = torch.float16
    torch_type = "sdaa"
    compile_backend = "teco_inductor"  # the model zoo's torch.compile backend for SDAA
    #: not fused: torch would accept ``fused=True`` for a PrivateUse1 device, but whether torch_sdaa
    #: registers fused SGD/AdamW kernels is not documented, and a missing kernel fails the first step.
    #: The price: fp16 AMP's GradScaler reads its inf check with one host sync per step.
    fused_optimizer = False
    #: teco_inductor's modes are not documented: only its default is offered
    compile_modes = ("default",)

    def runtime(self):
        return _sdk()[1]

    def is_available(self) -> Tuple[bool, str]:
        try:
            _, ns = _sdk()
        except ImportError as exc:
            if getattr(exc, "name", None) == "torch_sdaa":
                return False, "unavailable: torch_sdaa is not installed"
            return False, _one_line("unavailable: torch_sdaa failed to import", exc)
        except Exception as exc:  # a broken SDK install
            return False, _one_line("unavailable: torch_sdaa failed to import", exc)
        try:
            if hasattr(ns, "is_available") and not ns.is_available():
                return False, "unavailable: torch_sdaa found no SDAA card"
            if hasattr(ns, "device_count") and int(ns.device_count()) < 1:
                return False, "unavailable: torch_sdaa found no SDAA card"
        except Exception as exc:
            return False, _one_line("unavailable: torch_sdaa", exc)
        return True, ""

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
        if amp is None or not hasattr(amp, "autocast"):
            return torch.autocast(device_type="sdaa", dtype=dtype)
        if dtype == self.amp_dtype:
            return amp.autocast()  # exactly as the model zoo calls it: the SDK's default (fp16)
        try:
            return amp.autocast(dtype=dtype)
        except TypeError:
            raise ArcbenchError(f"this torch_sdaa's autocast() takes no dtype: AMP in "
                                f"{str(dtype).replace('torch.', '')} is not supported; use its default "
                                f"(float16)") from None

    def grad_scaler(self, enabled: bool = True, dtype=None):
        if not enabled or (dtype or self.amp_dtype) != torch.float16:
            return super().grad_scaler(False)
        amp = self._amp()
        if amp is not None and hasattr(amp, "GradScaler"):
            return amp.GradScaler()
        return torch.amp.GradScaler("sdaa")

    def device_name(self) -> str:
        fn = getattr(self.runtime(), "get_device_name", None)
        return str(fn(self.index or 0)) if fn else "SDAA"

    def peak_flops(self, dtype: torch.dtype = torch.float32) -> Optional[float]:
        return None  # no public table; MFU is reported as null

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
        return info


def _one_line(prefix: str, exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{prefix}: {type(exc).__name__}" + (f": {text}" if text else "")


@hookimpl
def register_devices(register):
    register(SDAADevice())
