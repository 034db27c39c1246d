"""The figures a run reports about its steps and memory: throughput and latency over the timed steps
(medians, tails), and the host's peak memory (what a CPU run reports as its device memory)."""
from __future__ import annotations

import resource
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from ..device import proc_kib

#: fewest timed steps from which p95/p99 are reported: below it they are a run's slowest steps
MIN_TAIL_SAMPLES = 100


def step_stats(data_times: Sequence[float], compute_times: Sequence[float], images_per_step: int,
               host_wait_times: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """Throughput (img/s) and latency (s) figures over timed steps (warm-up already removed).

    A step's time is ``data + compute`` (the card's wait before the step, then the step; end to end,
    see :mod:`arcbench.steptimer`), so ``throughput_mean`` is images / the timed steps' wall time.
    ``host_wait_times``: the host's time blocked on the loader per step (``host_wait_fraction``).
    p95/p99 need :data:`MIN_TAIL_SAMPLES` steps; below that they are None (the report says why)."""
    d = np.asarray(data_times, dtype=np.float64)
    c = np.asarray(compute_times, dtype=np.float64)
    if d.size == 0:
        return {}
    total = d + c
    ips = images_per_step / np.maximum(total, 1e-12)
    cips = images_per_step / np.maximum(c, 1e-12)
    tail = total.size >= MIN_TAIL_SAMPLES
    h = np.asarray(host_wait_times if host_wait_times is not None else [], dtype=np.float64)
    return {
        "throughput_median": float(np.median(ips)),
        "throughput_mean": float(images_per_step * total.size / total.sum()),
        "compute_ips": float(np.median(cips)),
        "data_wait_fraction": float(d.sum() / total.sum()),
        "latency_p50": float(np.percentile(total, 50)),
        "latency_p95": float(np.percentile(total, 95)) if tail else None,
        "latency_p99": float(np.percentile(total, 99)) if tail else None,
        "timed_steps": int(total.size),
        "timed_seconds": float(total.sum()),
        "host_wait_fraction": float(h.sum() / total.sum()) if h.size == total.size else None,
    }


def host_peak_rss() -> int:
    """Peak resident memory of this process in bytes since the last :func:`reset_host_peak`
    (Linux's VmHWM), or since the process started."""
    peak = proc_kib("/proc/self/status", "VmHWM:")
    if peak is not None:
        return peak * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_host_peak() -> bool:
    """Restart the peak-RSS count from the current RSS (Linux >= 4.0), so several runs in one
    process (``arcbench bench``) each report their own peak.  False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(device) -> dict:
    """A run's peak memory: the card's allocator peak, or on the host (no allocator figure) the
    process's peak RSS; ``peak_memory_kind`` says which."""
    mem = device.memory_stats().get("peak_memory")
    if mem is not None:
        return {"peak_memory": mem, "peak_memory_kind": "device"}
    return {"peak_memory": host_peak_rss(), "peak_memory_kind": "host_rss"}
