"""Step-time statistics: medians and tail latencies over the timed steps."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def step_stats(data_times: Sequence[float], compute_times: Sequence[float], images_per_step: int) -> Dict[str, float]:
    """Throughput (img/s) and latency (s) figures over timed steps (warm-up already removed)."""
    d = np.asarray(data_times, dtype=np.float64)
    c = np.asarray(compute_times, dtype=np.float64)
    if d.size == 0:
        return {}
    total = d + c
    ips = images_per_step / np.maximum(total, 1e-12)
    cips = images_per_step / np.maximum(c, 1e-12)
    return {
        "throughput_median": float(np.median(ips)),
        "throughput_mean": float(images_per_step * total.size / total.sum()),
        "compute_ips": float(np.median(cips)),
        "data_wait_fraction": float(d.sum() / total.sum()),
        "latency_p50": float(np.percentile(total, 50)),
        "latency_p95": float(np.percentile(total, 95)),
        "latency_p99": float(np.percentile(total, 99)),
        "timed_steps": int(total.size),
    }
