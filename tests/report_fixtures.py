"""Build run dirs in the format arcbench's recorder writes, for the report tests.

Generated rather than checked in so each test states exactly what it relies on.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence


def dlll(obj) -> str:
    return "DLLL " + json.dumps(obj) + "\n"


def metrics_lines(losses: Sequence[float], iters_per_epoch: int = 5, ips: float = 100.0,
                  acc: Optional[Sequence[float]] = None) -> str:
    """METADATA + per-step LOG records (epoch, iteration) + per-epoch accuracy records."""
    out = [dlll({"type": "METADATA", "metric": "train.loss", "metadata": {"unit": "", "format": ":.4f"}})]
    out.append(dlll({"type": "LOG", "step": "PARAMETER", "data": {"lr": 0.1}}))
    for i, loss in enumerate(losses):
        e, it = divmod(i, iters_per_epoch)
        out.append(dlll({"timestamp": str(1732880000 + i), "type": "LOG", "step": [e, it],
                         "data": {"train.loss": loss, "train.total_ips": ips + i % 3, "train.lr": 0.1}}))
        if it == iters_per_epoch - 1 and acc is not None and e < len(acc):
            out.append(dlll({"type": "LOG", "step": [e],
                             "data": {"val.lfw.accuracy": acc[e], "val.lfw.accuracy_std": 0.005,
                                      "train.loss": loss}}))
    out.append(dlll({"type": "LOG", "step": [], "data": {"train.total_ips": ips}}))
    return "".join(out)


def make_run(root, run_id: str, *, summary: Optional[dict] = None, config: Optional[dict] = None,
             system: Optional[dict] = None, metrics: Optional[str] = None, write_summary: bool = True,
             raw_summary: Optional[str] = None, **fields) -> str:
    """A run dir under ``root``; ``fields`` override summary.json keys."""
    d = os.path.join(os.fspath(root), run_id)
    os.makedirs(d, exist_ok=True)
    device = str(fields.get("device", "cpu"))
    cfg = {"run_id": run_id, "mode": "train", "device": device, "backbone": fields.get("backbone", "mobilefacenet"),
           "head": "arcface", "train_data": "datasets", "val_data": "lfw", "epochs": 2, "batch_size": 96,
           "precision": "amp", "nproc": 1, "nnodes": 1, "seed": 0}
    cfg.update(config or {})
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    sysinfo = system if system is not None else {
        "device": {"device": device, "device_name": f"{device.upper()} test card", "dist_backend": "gloo",
                   "amp_dtype": "bfloat16", "torch": "2.13"},
        "torch": "2.13", "python": "3.12", "cpu_model": "test cpu", "host": "testhost", "world_size": 1,
        "git_commit": "abc123"}
    with open(os.path.join(d, "system.json"), "w") as fh:
        json.dump(sysinfo, fh)
    if metrics is not None:
        with open(os.path.join(d, "metrics.jsonl"), "w") as fh:
            fh.write(metrics)
    if raw_summary is not None:
        with open(os.path.join(d, "summary.json"), "w") as fh:
            fh.write(raw_summary)
    elif write_summary:
        s = {"run_id": run_id, "status": "completed", "reason": None, "date": "2024-11-29T12:00:00",
             "device": device, "device_name": f"{device.upper()} test card", "backbone": "mobilefacenet",
             "head": "arcface", "precision": "amp", "amp": True, "nproc": 1, "nnodes": 1, "batch_size": 96,
             "train_set": "CASIA-WebFace", "eval_set": "LFW", "synthetic": False, "epochs": 2, "steps": 10,
             "wall_time": 12.5, "throughput_median": 100.0, "throughput_mean": 101.0, "compute_ips": 120.0,
             "data_wait_fraction": 0.1, "latency_p50": 0.9, "latency_p95": 1.0, "latency_p99": 1.1,
             "peak_memory": 3 << 30, "mfu": None, "amp_speedup": None, "scaling_efficiency": None,
             "lfw_accuracy": 0.985, "lfw_accuracy_std": 0.005, "best_lfw_accuracy": 0.985, "val_at_far": 0.91,
             "auc": 0.99, "eer": 0.02, "final_loss": 1.5, "bad_images": 0}
        s.update(summary or {})
        s.update(fields)
        with open(os.path.join(d, "summary.json"), "w") as fh:
            json.dump(s, fh)
    return d


def demo_runs(root) -> None:
    """A small, varied runs dir for looking at the report (docs/REPORTS.md uses it for the Chromium check)."""
    import random

    rng = random.Random(0)

    def curve(n, start, end, noise, scale=1.0):
        return [scale * (start + (end - start) * i / (n - 1)) + rng.uniform(-noise, noise) for i in range(n)]

    base = curve(40, 9.0, 2.0, 0.15)
    make_run(root, "sdaa-mobilefacenet-amp", device="sdaa", lfw_accuracy=0.9850, throughput_median=910.0,
             amp_speedup=1.62, metrics=metrics_lines(base, iters_per_epoch=10, acc=[0.962, 0.975, 0.982, 0.985]))
    make_run(root, "cuda-mobilefacenet-amp", device="cuda", lfw_accuracy=0.9862, throughput_median=1480.0,
             amp_speedup=2.05, metrics=metrics_lines([x * 1.01 for x in base], iters_per_epoch=10,
                                                     acc=[0.965, 0.978, 0.984, 0.9862]))
    for n, thr in ((2, 2850.0), (4, 5520.0)):
        make_run(root, f"cuda-mobilefacenet-amp-x{n}", device="cuda", nproc=n, batch_size=96 * n,
                 lfw_accuracy=0.9855, throughput_median=thr, scaling_efficiency=thr / (n * 1480.0))
    make_run(root, "cuda-iresnet50-fp32", device="cuda", backbone="iresnet50", precision="fp32", amp=False,
             lfw_accuracy=0.9810, throughput_median=420.0, peak_memory=9 << 30)
    make_run(root, "cpu-synthetic-bf16", device="cpu", synthetic=True, train_set="synthetic-faces",
             eval_set="synthetic-faces", lfw_accuracy=0.71, throughput_median=38.0, amp_speedup=0.86,
             metrics=metrics_lines(curve(20, 7.0, 4.0, 0.2), iters_per_epoch=10, acc=[0.62, 0.71]))
    make_run(root, "cuda-ghostfacenet-amp", device="cuda", backbone="ghostfacenet", lfw_accuracy=0.9902,
             throughput_median=1210.0)
    make_run(root, "sdaa-bench-mobilefacenet", device="sdaa", mode="bench", lfw_accuracy=None,
             throughput_median=935.0)


if __name__ == "__main__":
    import sys

    demo_runs(sys.argv[1] if len(sys.argv) > 1 else "demo-runs")
