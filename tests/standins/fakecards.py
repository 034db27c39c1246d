"""A stand-in accelerator with several cards, for multi-card tests without cards.

Loaded like a third-party plugin (``--plugin fakecards``; the tests put this
folder on PYTHONPATH so launched workers import it too).  The device
``fakecard`` subclasses :class:`arcbench.device.AcceleratorDevice` exactly as
a real accelerator plugin would, with a ``torch.cuda``-like runtime namespace.
Its placements map to CPU tensors, but every card index the harness asks for
is written down, so a test can check that rank r only ever used card r:

* ``FAKECARDS_LOG=DIR``: each process appends JSON lines to ``DIR/<pid>.jsonl``
  with its ``RANK``/``LOCAL_RANK`` and each event (``bind``, ``place``,
  ``ddp``, ``set_device``, ``synchronize``).
* ``FAKECARDS_COUNT``: cards on the node (default 4).
* ``RUNTIME.streams_log``: in this process, the stream calls in order (``stream_new``,
  ``stream_enter``/``stream_exit``, ``event_record``, ``wait_event``), each with the
  stream it ran on and the event's number, so a test can check what the copies overlap.

The ``tiny_mem`` backbone "allocates" activation memory on the fake card in
proportion to its batch, so peak-memory bookkeeping can be checked too.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

import torch

from arcbench import hookimpl
from arcbench.device import AcceleratorDevice


def _log(event: str, **info) -> None:
    folder = os.environ.get("FAKECARDS_LOG")
    if not folder:
        return
    row = {"rank": int(os.environ.get("RANK", 0)), "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
           "event": event, **info}
    with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a") as fh:
        fh.write(json.dumps(row) + "\n")


class FakeStream:
    """A queue of the fake card: it only writes down what it was asked to order."""

    def __init__(self, runtime, name: str):
        self.runtime, self.name = runtime, name

    def wait_event(self, event) -> None:
        self.runtime.note("wait_event", stream=self.name, number=event.number)

    def wait_stream(self, other) -> None:
        self.runtime.note("wait_stream", stream=self.name, other=other.name)


class FakeEvent:
    def __init__(self, runtime, number: int):
        self.runtime, self.number = runtime, number

    def record(self, stream=None) -> None:
        stream = stream or self.runtime.current_stream()
        self.time = time.perf_counter()  # the fake card runs each op as it is queued: done when recorded
        self.runtime.note("event_record", stream=stream.name, number=self.number)

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "FakeEvent") -> float:
        """Milliseconds between two recorded events, as ``torch.cuda.Event.elapsed_time``."""
        return (end.time - self.time) * 1e3


class _StreamRuntime:
    """Streams and events with ``torch.cuda``'s names, mixed into the fake runtime."""

    def note(self, event: str, **info) -> None:
        self.streams_log.append((event, info))
        _log(event, index=self.current, **info)

    def current_stream(self, device=None) -> FakeStream:
        return self._current

    def Stream(self, device=None, priority: int = 0) -> FakeStream:  # noqa: N802 (torch.cuda's name)
        self._streams += 1
        stream = FakeStream(self, f"side{self._streams}")
        self.note("stream_new", stream=stream.name)
        return stream

    def Event(self, enable_timing: bool = False, **_) -> FakeEvent:  # noqa: N802
        self._events += 1
        return FakeEvent(self, self._events)

    @contextlib.contextmanager
    def stream(self, stream):
        before, self._current = self._current, stream
        self.note("stream_enter", stream=stream.name)
        try:
            yield
        finally:
            self._current = before
            self.note("stream_exit", stream=stream.name)

    def reset_streams(self) -> None:
        self.streams_log = []
        self._streams = self._events = 0
        self._current = FakeStream(self, "default")


class FakeRuntime(_StreamRuntime):
    """The ``torch.cuda``-like namespace of the fake cards (same names and signatures)."""

    def __init__(self):
        self.current = 0
        self.allocated = 0
        self.peak = 0
        self.rng = {}
        self.reset_streams()

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return int(os.environ.get("FAKECARDS_COUNT", "4"))

    def set_device(self, index: int) -> None:
        _log("set_device", index=int(index))
        self.current = int(index)

    def current_device(self) -> int:
        return self.current

    def synchronize(self) -> None:
        pass

    def get_device_name(self, index: int = 0) -> str:
        return f"FakeCard {index}"

    # memory: what the fake allocator has handed out
    def allocate(self, nbytes: int) -> None:
        self.allocated += int(nbytes)
        self.peak = max(self.peak, self.allocated)

    def free(self, nbytes: int) -> None:
        self.allocated -= int(nbytes)

    def max_memory_allocated(self) -> int:
        return self.peak

    def memory_allocated(self) -> int:
        return self.allocated

    def reset_peak_memory_stats(self) -> None:
        self.peak = self.allocated

    def manual_seed_all(self, seed: int) -> None:
        self.rng = {i: torch.tensor([seed, i], dtype=torch.uint8) for i in range(self.device_count())}

    def get_rng_state_all(self):
        return [self.rng.get(i, torch.zeros(2, dtype=torch.uint8)) for i in range(self.device_count())]

    def set_rng_state_all(self, states) -> None:
        self.rng = dict(enumerate(states))


RUNTIME = FakeRuntime()


class FakeCardDevice(AcceleratorDevice):
    """Four cards whose tensors live on the host; collectives run on gloo but, like nccl/tccl,
    want their buffers on the bound card."""

    name = "fakecard"
    dist_backend = "gloo"
    amp_dtype = torch.bfloat16
    torch_type = "cpu"
    collectives_on_device = True

    def runtime(self):
        return RUNTIME

    def bind(self, local_rank: int = 0) -> None:
        super().bind(local_rank)
        _log("bind", index=self.index)

    def torch_device(self) -> torch.device:
        index = self._bound()
        _log("place", index=index)
        return torch.device("cpu")

    def ddp_device_ids(self):
        _log("ddp", index=self._bound())
        return None  # the module is on the host


class MemHungry(torch.nn.Module):
    """A tiny backbone that charges its input's size to the fake card while it runs."""

    def __init__(self, embedding_size: int = 16, **_):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.Flatten(),
                                        torch.nn.LazyLinear(embedding_size))
        self.body(torch.zeros(1, 3, 112, 112))  # materialise the lazy layer

    def forward(self, x):
        nbytes = x.numel() * x.element_size()
        RUNTIME.allocate(nbytes)
        try:
            return self.body(x)
        finally:
            RUNTIME.free(nbytes)


@hookimpl
def register_devices(register):
    register(FakeCardDevice())


@hookimpl
def register_backbones(register):
    register("tiny_mem", MemHungry, embedding_size=16, margin_scale=16.0)
