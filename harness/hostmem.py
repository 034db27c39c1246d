"""The host's peak memory: what a CPU run reports as its 'device memory'."""
from __future__ import annotations

import resource
import sys

from .device import proc_kib


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
