"""A strict stand-in for Tecorigin's ``torch_sdaa`` SDK (tests only; never installed).

It has the names and signatures that public model-zoo code calls --
``torch.sdaa.is_available/device_count/set_device/current_device/synchronize/
get_device_name``, the memory statistics, the RNG functions, and
``torch_sdaa.amp.autocast()`` / ``GradScaler()`` -- and records every call, in
order, in :data:`CALLS` (and, with ``TORCH_SDAA_STANDIN_LOG=FILE``, as JSON
lines).  Importing it installs ``torch.sdaa``, as the real SDK does.  Compute
stays on CPU tensors: the tests point the sdaa device's placements at the host.

``TORCH_SDAA_STANDIN`` picks a mode:

* ``ok`` (default): 4 cards;
* ``nocard``: the SDK imports but sees no card;
* ``broken``: the import fails the way a broken install does (a missing runtime library);
* ``nodtype``: ``amp.autocast()`` takes no ``dtype`` keyword (older SDKs);
* ``banner``: the import prints a version banner to stdout, from Python and from the C level;
* ``noevent``: no ``torch.sdaa.Event`` (an SDK without timing events: the step timer falls back
  to synchronize + host clock).

``torch.sdaa.Event(enable_timing=True)`` is ``torch.cuda.Event``'s shape: on host tensors the
stream reaches a mark when it is recorded, so ``record()`` reads the host clock.
"""
from __future__ import annotations

import json
import os
import time
import types

import torch

__version__ = "1.3.0-standin"
MODE = os.environ.get("TORCH_SDAA_STANDIN", "ok")
CALLS: list = []

if MODE == "broken":
    raise OSError("libsdaart.so: cannot open shared object file: No such file or directory")
if MODE == "banner":
    print(f"torch_sdaa {__version__} (stand-in) -- SDAA runtime banner")
    os.write(1, b"[sdaa runtime] driver 2.0.0 loaded\n")


def record(name: str, *args, **kwargs) -> None:
    CALLS.append((name, args, kwargs))
    path = os.environ.get("TORCH_SDAA_STANDIN_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "call": name, "args": [repr(a) for a in args],
                                 "kwargs": {k: repr(v) for k, v in kwargs.items()}}) + "\n")


class _Runtime:
    """Per-process runtime state: the current card, memory counters, RNG states."""

    def __init__(self):
        self.count = 0 if MODE == "nocard" else 4
        self.current = 0
        self.peak = 0
        self.allocated = 0
        self.rng = [torch.tensor([i, 0, 0, 0], dtype=torch.uint8) for i in range(self.count)]


_rt = _Runtime()


def is_available() -> bool:
    record("is_available")
    return _rt.count > 0


def device_count() -> int:
    record("device_count")
    return _rt.count


def set_device(device) -> None:
    record("set_device", device)
    index = int(device)
    if not 0 <= index < _rt.count:
        raise RuntimeError(f"invalid device ordinal {index}")
    _rt.current = index


def current_device() -> int:
    record("current_device")
    return _rt.current


def synchronize(device=None) -> None:
    record("synchronize", *(() if device is None else (device,)))


def get_device_name(device=None) -> str:
    record("get_device_name", *(() if device is None else (device,)))
    return "T100 (stand-in)"


def max_memory_allocated(device=None) -> int:
    record("max_memory_allocated")
    return _rt.peak


def memory_allocated(device=None) -> int:
    record("memory_allocated")
    return _rt.allocated


def reset_peak_memory_stats(device=None) -> None:
    record("reset_peak_memory_stats")
    _rt.peak = _rt.allocated


def manual_seed_all(seed: int) -> None:
    record("manual_seed_all", seed)
    _rt.rng = [torch.tensor([i, int(seed) % 256, 1, 1], dtype=torch.uint8) for i in range(_rt.count)]


def get_rng_state_all():
    record("get_rng_state_all")
    return [s.clone() for s in _rt.rng]


def set_rng_state_all(new_states) -> None:
    record("set_rng_state_all", [s.tolist() for s in new_states])
    _rt.rng = [s.clone() for s in new_states]


class Event:
    """A timing event on the current stream (host tensors: it completes as it is recorded)."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        record("Event", **({"enable_timing": True} if enable_timing else {}))
        self.enable_timing, self.at = enable_timing, None

    def record(self, stream=None) -> None:
        record("Event.record")
        self.at = time.perf_counter()

    def query(self) -> bool:
        return self.at is not None

    def synchronize(self) -> None:
        record("Event.synchronize")
        if self.at is None:
            raise RuntimeError("Event.synchronize() on an event never recorded")

    def elapsed_time(self, end: "Event") -> float:
        if not (self.enable_timing and end.enable_timing) or self.at is None or end.at is None:
            raise RuntimeError("elapsed_time needs two recorded events created with enable_timing=True")
        return (end.at - self.at) * 1e3  # milliseconds, as torch.cuda.Event


sdaa = types.ModuleType("torch.sdaa")
for _name in ("is_available", "device_count", "set_device", "current_device", "synchronize", "get_device_name",
              "max_memory_allocated", "memory_allocated", "reset_peak_memory_stats", "manual_seed_all",
              "get_rng_state_all", "set_rng_state_all"):
    setattr(sdaa, _name, globals()[_name])
if MODE != "noevent":
    sdaa.Event = Event

from . import amp  # noqa: E402  (the real SDK exposes torch_sdaa.amp)

sdaa.amp = amp
torch.sdaa = sdaa
