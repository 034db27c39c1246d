"""The device contract that device plugins implement.

A :class:`Device` hides everything that differs between accelerators: how to
select a card, which collective backend to use, what AMP means, how to time
a step without stalling the card (:meth:`Device.step_timer`) and how to read memory.
"""
from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Optional, Tuple

import torch


class Device:
    """A kind of device; one instance per process, bound to one card by :meth:`bind`.

    The harness binds once per process (``device.bind(local_rank)``) and from
    then on never names a card: :meth:`torch_device` is this process's card,
    and everything the harness creates (model, head, batches, collective
    buffers, evaluation inputs, ``map_location`` on resume) goes there.
    """

    name: str = ""
    #: ``--device auto`` picks the available device with the highest value (ties: the one
    #: registered first).  Built-ins: cpu 10, cuda 20, sdaa 30; a plugin that leaves the
    #: default 0 is never picked over the CPU, and one that sets e.g. 40 is picked first.
    auto_priority: int = 0
    dist_backend: str = "gloo"
    #: dtype autocast uses when AMP is on
    amp_dtype: torch.dtype = torch.bfloat16
    #: the ``torch.device`` type string
    torch_type: str = "cpu"
    #: ``torch.compile(backend=...)`` for ``--compile``
    compile_backend: str = "inductor"
    #: the ``--compile-mode`` values this device supports (inductor's modes; CUDA graphs need CUDA)
    compile_modes: Tuple[str, ...] = ("default", "max-autotune-no-cudagraphs")
    #: collectives need their tensors on the device (nccl, tccl); gloo takes host tensors
    collectives_on_device: bool = False
    plugin: str = ""
    #: the optimizer step as one fused kernel (``SGD/AdamW(fused=True)``): True, False, or None for
    #: "where torch lists this device type as having fused kernels" (see :meth:`use_fused_optimizer`)
    fused_optimizer: Optional[bool] = None
    #: the card this process is bound to (None before :meth:`bind`)
    index: Optional[int] = None

    def is_available(self) -> Tuple[bool, str]:
        """``(True, "")`` or ``(False, reason)``; never raises."""
        return True, ""

    def device_count(self) -> int:
        return 1

    def bind(self, local_rank: int = 0) -> None:
        """Bind this process to card ``local_rank``; call once, before anything is placed."""
        self.index = int(local_rank)

    def torch_device(self) -> torch.device:
        """This process's card."""
        return torch.device(self.torch_type)

    def collective_device(self) -> torch.device:
        """Where collective buffers live: the bound card for nccl/tccl, the host for gloo."""
        return self.torch_device() if self.collectives_on_device else torch.device("cpu")

    def ddp_device_ids(self) -> Optional[list]:
        """``device_ids`` for DistributedDataParallel (None on the host)."""
        return None

    def autocast(self, enabled: bool = True, dtype: Optional[torch.dtype] = None):
        if not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_type, dtype=dtype or self.amp_dtype)

    def default_amp_dtype(self) -> str:
        """``--amp-dtype`` when not given: ``bf16`` or ``fp16`` (the plugin's ``amp_dtype``)."""
        return "fp16" if self.amp_dtype == torch.float16 else "bf16"

    def grad_scaler(self, enabled: bool = True, dtype: Optional[torch.dtype] = None):
        """A GradScaler when fp16 AMP needs one; otherwise a disabled scaler (fp32, bf16)."""
        if enabled and (dtype or self.amp_dtype) == torch.float16:
            try:
                return torch.amp.GradScaler(self.torch_type)
            except (AttributeError, TypeError, RuntimeError):  # torch < 2.3 has no scaler for this device
                pass
        return _NoScaler()

    def configure(self, deterministic: bool = False) -> None:
        """Process-wide settings for a run, before anything is built: ``deterministic`` turns on
        torch's deterministic algorithms (warning where an op has none); accelerators add theirs."""
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def use_fused_optimizer(self) -> bool:
        """Whether the optimizer step is fused: no per-step host sync for an fp16 GradScaler."""
        if self.fused_optimizer is not None:
            return bool(self.fused_optimizer)
        try:
            from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        except ImportError:  # torch < 2.1
            return False
        return self.torch_type in _get_fused_kernels_supported_devices()

    def synchronize(self) -> None:
        """Wait for all queued work (before a host-clock timer read)."""

    def timestamp(self) -> float:
        """``perf_counter()`` after :meth:`synchronize`: a host-clock read that includes queued work."""
        self.synchronize()
        return time.perf_counter()

    # Copies that overlap compute: the input pipeline copies the next batch on a side stream
    # while this step runs.  A device without streams returns None and its copies stay in order.
    def side_stream(self):
        """A new stream for host-to-device copies on the bound card, or None (no streams)."""
        return None

    def stream_scope(self, stream):
        """Work issued inside runs on ``stream``."""
        return contextlib.nullcontext()

    def record_event(self, stream):
        """An event marking the end of the work issued so far on ``stream`` (None without streams)."""
        return None

    def wait_event(self, event, tensors=()) -> None:
        """Order the compute stream's later work after ``event``; ``tensors``, made on the side
        stream, are kept alive for the compute stream (the caching allocator must not reuse them)."""

    def step_timer(self):
        """The training loop's step timer (:mod:`arcbench.steptimer`): sync + host clock here, where
        the host clock is exact; accelerators use their runtime's timing events when it has them."""
        from .steptimer import SyncStepTimer

        return SyncStepTimer(self)

    def memory_stats(self) -> dict:
        """``{"peak_memory": bytes or None, "allocated": bytes or None}``."""
        return {"peak_memory": None, "allocated": None}

    def reset_peak_memory(self) -> None:
        pass

    def device_name(self) -> str:
        return platform.processor() or platform.machine()

    def peak_flops(self, dtype: torch.dtype = torch.float32) -> Optional[float]:
        """Peak FLOP/s for ``dtype`` (one card), or ``None`` when unknown."""
        return None

    def precision_label(self, precision: str) -> str:
        """How a precision actually runs here, e.g. ``fp32 (tf32)`` on GPUs that use TF32."""
        return precision

    def onnx_providers(self) -> Optional[list]:
        """ONNX Runtime execution providers that run on this device, first choice first (names, or
        ``(name, options)`` pairs), for ``--engine onnxruntime``; None: none known (optional to implement)."""
        return None

    def seed(self, n: int) -> None:
        torch.manual_seed(n)

    def rng_state(self) -> Optional[list]:
        """The device's RNG states (saved in checkpoints), or None for the host."""
        return None

    def set_rng_state(self, state) -> None:
        pass

    def describe(self) -> dict:
        """This device as a run's ``system.json`` records it; subclasses add their runtime's details."""
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
        """The row ``arcbench devices`` prints: :meth:`describe`'s common keys and the plugin."""
        d = self.describe()
        return {"name": self.name, **{k: d[k] for k in _INFO_KEYS}, "plugin": self.plugin}

    def __repr__(self) -> str:
        return f"<Device {self.name}>"


#: the keys of :meth:`Device.describe` that ``arcbench devices`` shows, in its column order
_INFO_KEYS = ("available", "reason", "dist_backend", "amp_dtype", "device_name")


class AcceleratorDevice(Device):
    """A device with cards and a ``torch.cuda``-like runtime namespace (cuda, sdaa, third-party).

    Subclasses differ in :meth:`runtime` (the namespace), ``dist_backend``,
    AMP entry points and ``compile_backend``; binding, placement, timing,
    memory and RNG are the same everywhere.
    """

    dist_backend = "nccl"
    amp_dtype = torch.float16
    collectives_on_device = True

    def runtime(self):
        """The runtime namespace: ``torch.cuda``, ``torch.sdaa``, ..."""
        return getattr(torch, self.torch_type)

    def is_available(self) -> Tuple[bool, str]:
        try:
            rt = self.runtime()
            if rt.is_available() and rt.device_count() > 0:
                return True, ""
        except Exception as exc:  # a broken driver or SDK reads as unavailable
            return False, f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0]
        return False, f"unavailable: no {self.name} card visible"

    def device_count(self) -> int:
        return int(self.runtime().device_count())

    def bind(self, local_rank: int = 0) -> None:
        count = self.device_count()
        if not 0 <= local_rank < count:
            from .errors import ArcbenchError

            raise ArcbenchError(f"{local_rank + 1} processes but {count} {self.name} card"
                                f"{'' if count == 1 else 's'} on this node")
        self.runtime().set_device(local_rank)
        self.index = int(local_rank)

    def _bound(self) -> int:
        if self.index is None:
            raise RuntimeError(f"device {self.name!r} is not bound to a card: call device.bind(local_rank) first")
        return self.index

    def torch_device(self) -> torch.device:
        return torch.device(self.torch_type, self._bound())

    def ddp_device_ids(self) -> Optional[list]:
        return [self._bound()]

    def synchronize(self) -> None:
        self.runtime().synchronize()

    def side_stream(self):
        rt = self.runtime()
        if not all(hasattr(rt, n) for n in ("Stream", "Event", "stream", "current_stream")):
            return None  # a runtime without streams: copies stay on the compute queue
        return rt.Stream(device=self.torch_device())

    def stream_scope(self, stream):
        return self.runtime().stream(stream)

    def record_event(self, stream):
        event = self.runtime().Event()
        event.record(stream)
        return event

    def wait_event(self, event, tensors=()) -> None:
        compute = self.runtime().current_stream()
        compute.wait_event(event)
        for t in tensors:
            if t.device.type != "cpu":  # host tensors have no stream-ordered allocator
                t.record_stream(compute)

    def step_timer(self):
        """Timing events (``runtime().Event(enable_timing=True)``) where the runtime offers them, so the
        loop never waits for the card; else sync + host clock."""
        from .steptimer import EventStepTimer, SyncStepTimer

        event = getattr(self.runtime(), "Event", None)
        return EventStepTimer(self, event) if event is not None else SyncStepTimer(self)

    def memory_stats(self) -> dict:
        rt = self.runtime()
        return {"peak_memory": int(rt.max_memory_allocated()), "allocated": int(rt.memory_allocated())}

    def reset_peak_memory(self) -> None:
        self.runtime().reset_peak_memory_stats()

    def device_name(self) -> str:
        return str(self.runtime().get_device_name(self.index or 0))

    def seed(self, n: int) -> None:
        torch.manual_seed(n)
        self.runtime().manual_seed_all(n)

    def rng_state(self) -> Optional[list]:
        return [s.cpu() for s in self.runtime().get_rng_state_all()]

    def set_rng_state(self, state) -> None:
        if state is not None:
            self.runtime().set_rng_state_all(list(state))

    def describe(self) -> dict:
        info = super().describe()
        if info["available"]:
            info.update(device_count=self.device_count(), bound_index=self.index)
        return info


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


def proc_kib(path: str, field: str) -> Optional[int]:
    """A ``kB`` figure from a Linux ``/proc`` file (``VmHWM:``, ``MemAvailable:`` ...), or None."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
