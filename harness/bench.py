"""`arcbench bench`: speed without a full training run.

Each grid point is a short run (W warm-up + S timed steps) recorded as a run
directory, so ``arcbench report`` sees bench results beside training runs.
Train-mode points go through exactly the training code path (including the
elastic launcher for ``nproc > 1``), so the figures are the ones a real run
gets.  Derived columns are ratios measured in the same invocation:
``amp_speedup`` = AMP img/s / FP32 img/s, ``scaling_efficiency`` = img/s at
N processes / (N x img/s at 1), ``mfu`` = model FLOPs/image x img/s / peak FLOP/s,
with train FLOPs = 3 x forward FLOPs (see :func:`step_flops`).
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Dict, List, Optional, Tuple

import torch

from .config import RunConfig
from .errors import ArcbenchError
from .recorder import Recorder

ROW_KEYS = ("device", "device_name", "backbone", "mode", "precision", "nproc", "batch_size", "data",
            "throughput_median", "throughput_mean", "latency_p50", "latency_p95", "latency_p99",
            "data_wait_fraction", "peak_memory", "amp_speedup", "scaling_efficiency", "mfu", "mfu_note",
            "flops_per_image", "synthetic", "status", "run_id")


#: training FLOPs per image = TRAIN_FLOPS_FACTOR x forward FLOPs (forward 1x, backward 2x:
#: the gradients w.r.t. activations and w.r.t. weights each cost about one forward)
TRAIN_FLOPS_FACTOR = 3


def step_flops(backbone: str, head: str, batch: int, mode: str, num_classes: int = 1000) -> Optional[int]:
    """Model FLOPs of one step at ``batch`` images, counted on the CPU.

    eval: the backbone's forward.  train: 3 x the forward of backbone + margin
    head (the usual MFU convention, as in PaLM/Megatron).  Counting the backward
    with ``torch.utils.flop_counter`` is not used: it charges grouped/depthwise
    convolution backward as if it were dense (MobileFaceNet: 0.44 GFLOPs forward
    but 4.67 GFLOPs "forward+backward" per image), which would inflate MFU ~3.5x.
    """
    from .flops import count_flops
    from .train import build_face_model

    probe = 2
    cfg = RunConfig(backbone=backbone, head=head)
    face = build_face_model(cfg, num_classes).eval()
    x = torch.randn(probe, 3, 112, 112)
    y = torch.randint(0, num_classes, (probe,))

    def fn():
        with torch.no_grad():
            if mode == "eval":
                face.backbone(x)
            else:
                face(x, y)

    flops = count_flops(fn)
    if flops is None:
        return None
    factor = 1 if mode == "eval" else TRAIN_FLOPS_FACTOR
    return int(flops * factor * batch / probe)


def _eval_point(cfg: RunConfig, warmup: int, steps: int, device) -> dict:
    """Embedding throughput/latency at one batch size (forward only, synthetic or real images),
    with the model exactly as :func:`arcbench.evaluate.evaluate` prepares it."""
    from .plugins import create_backbone
    from .stats import step_stats
    from .worker import open_train_data

    from .evaluate import inference_model

    tdev = device.torch_device()
    # the module arcbench.evaluate runs: conv+BN folded copy for built-in backbones
    model = inference_model(create_backbone(cfg.backbone).to(tdev).eval(), channels_last=cfg.channels_last)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model = torch.compile(model)
    data = open_train_data(cfg.replace(synthetic_steps=warmup + steps), device, 0, 1)
    device.reset_peak_memory()
    dts, cts = [], []
    it = itertools.cycle(data) if cfg.train_data != "synthetic" else iter(data)
    with torch.inference_mode():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            x, _ = next(it)
            x = x.to(tdev, non_blocking=True, memory_format=torch.channels_last if cfg.channels_last
                     else torch.contiguous_format)
            t1 = time.perf_counter()
            with device.autocast(cfg.amp):
                model(x)
            device.synchronize()
            t2 = time.perf_counter()
            if i >= warmup:
                dts.append(t1 - t0)
                cts.append(t2 - t1)
    out = step_stats(dts, cts, cfg.per_process_batch)
    mem = device.memory_stats().get("peak_memory")
    if mem is None:
        from .train import host_peak_rss

        mem = host_peak_rss()
    out.update(peak_memory=mem, steps=warmup + steps, status="completed", train_set=data.name,
               synthetic=bool(getattr(data, "synthetic", False)))
    return out


def run_point(base: RunConfig, *, precision: str, batch_size: int, nproc: int, mode: str,
              warmup: int, steps: int) -> dict:
    from . import runner

    cfg = base.replace(precision=precision, batch_size=batch_size * nproc, nproc=nproc, mode="bench",
                       max_steps=warmup + steps, epochs=10 ** 6 if base.train_data != "synthetic" else 1,
                       synthetic_steps=warmup + steps, timing_warmup=warmup, checkpoint_every=0,
                       eval_every=0, val_data=None, val_pairs=None, val_bin=None, quiet=True)
    if mode == "eval":
        if nproc != 1:
            raise ArcbenchError("--mode eval measures one process; use --nproc 1")
        cfg, run_dir, device = runner.prepare(cfg)
        rec = Recorder(run_dir)
        try:
            res = _eval_point(cfg, warmup, steps, device)
        except Exception as exc:
            rec.update_summary(status="failed", reason=f"{type(exc).__name__}: {exc}"[:300])
            raise
        summary = rec.update_summary(bench_mode="eval", **res)
        rec.close()
        return summary
    try:
        run_dir, summary = runner.execute(cfg)
    except runner.RunFailed as exc:
        return {"status": "failed", "reason": str(exc), "precision": precision, "nproc": nproc,
                "batch_size": batch_size * nproc}
    Recorder(run_dir).update_summary(bench_mode="train")
    return {**summary, "bench_mode": "train"}


def bench(base: RunConfig, *, precisions: List[str], batch_sizes: List[int], nprocs: List[int],
          mode: str = "train", warmup: int = 5, steps: int = 20, log=None) -> List[dict]:
    """Run the grid and return one row per point, with the derived ratios filled in."""
    from . import plugins

    device = plugins.require_device(base.device)
    device.bind(0)  # the parent measures eval points and FLOPs itself; workers bind their own cards
    rows = []
    grid = list(itertools.product(batch_sizes, nprocs, precisions))
    for i, (bs, n, prec) in enumerate(grid, 1):
        if log:
            log(f"[{i}/{len(grid)}] {base.backbone} {mode} {prec} batch {bs} x {n} proc on {device.name} ...")
        s = run_point(base.replace(device=device.name), precision=prec, batch_size=bs, nproc=n, mode=mode,
                      warmup=warmup, steps=steps)
        row = {k: s.get(k) for k in ROW_KEYS}
        row.update(device=device.name, backbone=base.backbone, mode=mode, precision=prec, nproc=n,
                   batch_size=bs * n, per_process_batch=bs, data=base.train_data,
                   run_dir=s.get("run_id") and os.path.join(os.path.abspath(base.out), s["run_id"]))
        rows.append(row)
    derive(rows, device, base)
    for row in rows:
        if row.get("run_dir") and os.path.isdir(row["run_dir"]):
            Recorder(row["run_dir"]).update_summary(
                amp_speedup=row["amp_speedup"], scaling_efficiency=row["scaling_efficiency"],
                mfu=row["mfu"], mfu_note=row["mfu_note"], flops_per_image=row["flops_per_image"],
                precision_label=row["precision"])
    return rows


def derive(rows: List[dict], device, base: RunConfig) -> None:
    """Fill amp_speedup, scaling_efficiency and mfu from rows measured side by side."""
    def key(r, **over):
        d = {k: r[k] for k in ("backbone", "mode", "precision", "nproc", "per_process_batch")}
        d.update(over)
        return tuple(sorted(d.items()))

    index = {key(r): r for r in rows}
    flops_cache: Dict[tuple, Optional[int]] = {}
    for r in rows:
        thr = r.get("throughput_median")
        ref = index.get(key(r, precision="fp32"))
        r["amp_speedup"] = (thr / ref["throughput_median"]) if (
            r["precision"] == "amp" and ref and thr and ref.get("throughput_median")) else None
        one = index.get(key(r, nproc=1))
        r["scaling_efficiency"] = (thr / (r["nproc"] * one["throughput_median"])) if (
            one and thr and one.get("throughput_median")) else None
        fk = (r["backbone"], r["mode"])
        if fk not in flops_cache:
            per_img = step_flops(r["backbone"], base.head, 1, r["mode"], base.synthetic_classes)
            flops_cache[fk] = per_img
        per_img = flops_cache[fk]
        r["flops_per_image"] = per_img
        dtype = device.amp_dtype if r["precision"] == "amp" else torch.float32
        r["mfu"], r["mfu_note"] = mfu(per_img, thr, device.peak_flops(dtype), r["nproc"])
    for r in rows:  # after matching: say how "fp32" really ran (TF32 tensor cores on recent GPUs)
        r["precision"] = device.precision_label(r["precision"])


def mfu(flops_per_image: Optional[int], throughput: Optional[float], peak: Optional[float],
        nproc: int) -> Tuple[Optional[float], Optional[str]]:
    """``(model FLOPs utilisation, note)``; throughput is global img/s, the peak is per card.

    A utilisation above 1 cannot be true: it means the peak used is not the one the work
    ran at (e.g. an fp32 peak for TF32 convolutions) or the FLOP count is wrong, so it is
    reported as None with the reason instead of a figure nobody should believe."""
    if not (peak and flops_per_image and throughput):
        return None, None
    achieved = flops_per_image * throughput / nproc
    if achieved > peak:
        return None, (f"measured {achieved / 1e12:.2f} TFLOP/s per card exceeds the stated peak "
                      f"{peak / 1e12:.2f} TFLOP/s: the peak or the FLOP count is wrong")
    return achieved / peak, None
