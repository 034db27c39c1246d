"""`arcbench bench`: speed without a full training run.

Each grid point is a short run (W warm-up + S timed steps) recorded as a run
directory, so ``arcbench report`` sees bench results beside training runs.
Train-mode points go through exactly the training code path (including the
elastic launcher for ``nproc > 1``), so the figures are the ones a real run
gets.  Derived columns are ratios measured in the same invocation:
``amp_speedup`` = AMP img/s / FP32 img/s, ``scaling_efficiency`` = img/s at
N processes / (N x img/s at 1), ``mfu`` = model FLOPs/image x img/s / peak FLOP/s,
with train FLOPs = 3 x forward FLOPs (see :func:`step_flops`).

Class-count axis (synthetic data): ``num_classes`` x ``sample_rate`` points,
the latter with the Partial FC head.  Before a point starts, the head's memory
per process is planned (:func:`head_plan`); a point that cannot fit the card
(or, on the CPU, this process's share of the host's available memory) is a
row with status ``skipped (does not fit)`` and one line saying why, never an
out-of-memory traceback.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..config import RunConfig
from ..errors import ArcbenchError

ROW_KEYS = ("device", "device_name", "backbone", "mode", "engine", "precision", "amp_dtype", "compile_mode", "nproc",
            "batch_size", "data",
            "head", "num_classes", "sample_rate", "head_memory", "head_memory_planned", "reason",
            "throughput_median", "throughput_mean", "latency_p50", "latency_p95", "latency_p99",
            "data_wait_fraction", "host_wait_fraction", "timed_steps", "timed_seconds", "step_timer", "peak_memory",
            "amp_speedup", "scaling_efficiency", "mfu", "mfu_note",
            "flops_per_image", "synthetic", "status", "run_id", "feed_ratio", "workers",
            "throughput_per_worker", "decode_img_s", "decode_ratio", "decode")


#: training FLOPs per image = TRAIN_FLOPS_FACTOR x forward FLOPs (forward 1x, backward 2x:
#: the gradients w.r.t. activations and w.r.t. weights each cost about one forward)
TRAIN_FLOPS_FACTOR = 3


#: default timed steps on the CPU; on an accelerator at least ACCELERATOR_STEPS and ACCELERATOR_SECONDS
#: (whichever comes later): 20 steps of 10-40 ms are too short for clocks and power to settle,
#: and p95/p99 of fewer than 100 samples are only the slowest steps
CPU_STEPS = 20
ACCELERATOR_STEPS = 200
ACCELERATOR_SECONDS = 10.0


def default_steps(device) -> Tuple[int, float]:
    """``(timed steps, minimum timed seconds)`` when ``--steps`` is not given."""
    from ..device import AcceleratorDevice

    if isinstance(device, AcceleratorDevice):
        return ACCELERATOR_STEPS, ACCELERATOR_SECONDS
    return CPU_STEPS, 0.0


SKIPPED = "skipped (does not fit)"
#: a point runs when the head's planned step memory is within this share of the memory it may use
FIT_FRACTION = 0.9


def head_flops_per_image(backbone: str, head: str, num_classes: int, sample_rate: float = 1.0,
                         nproc: int = 1) -> int:
    """Forward FLOPs per image of the margin head, summed over the processes, from the head's
    registered plan (:func:`arcbench.head.plan`): ``2 x D x C`` for a full head, ``2 x D x`` the
    sampled centres for Partial FC."""
    from ..head import plan
    from ..registry import get_backbone, get_head

    dim = get_backbone(backbone).embedding_size
    return plan(get_head(head), num_classes, dim, nproc, sample_rate=sample_rate).flops_per_image


def step_flops(backbone: str, head: str, batch: int, mode: str, num_classes: int = 1000,
               sample_rate: float = 1.0, nproc: int = 1) -> Optional[int]:
    """Model FLOPs of one step at ``batch`` images (global), counted on the CPU.

    eval: the backbone's forward.  train: 3 x (the backbone's forward + the margin
    head's cosine matmul, :func:`head_flops_per_image`, which counts only the
    centres a Partial FC step uses) - the usual MFU convention, as in
    PaLM/Megatron.  The head is counted analytically, never built: a 2M-class
    head is gigabytes.  Counting the backward
    with ``torch.utils.flop_counter`` is not used: it charges grouped/depthwise
    convolution backward as if it were dense (MobileFaceNet: 0.44 GFLOPs forward
    but 4.67 GFLOPs "forward+backward" per image), which would inflate MFU ~3.5x.
    """
    from .flops import forward_flops
    from ..registry import get_backbone

    probe = 2
    spec = get_backbone(backbone)
    flops = forward_flops(spec.create(), spec.input_size, batch=probe)
    if flops is None:
        return None
    if mode == "eval":
        return int(flops * batch / probe)
    per_image = flops / probe + head_flops_per_image(backbone, head, num_classes, sample_rate, nproc)
    return int(TRAIN_FLOPS_FACTOR * per_image * batch)


def memory_per_process(device, nproc: int) -> Tuple[Optional[int], str]:
    """``(bytes one process may use, how that was found)``: the card's total memory on an
    accelerator; on the CPU, the host's available memory (/proc/meminfo MemAvailable)
    shared by ``nproc`` processes.  ``(None, reason)`` where it cannot be told."""
    if device.torch_type == "cpu":
        avail = host_available_memory()
        if avail is None:
            return None, "the host's available memory is unknown"
        share = f", {avail / nproc / 1e9:.1f} GB per process" if nproc > 1 else ""
        return avail // nproc, f"the host has {avail / 1e9:.1f} GB available{share}"
    try:
        rt = getattr(torch, device.torch_type)
        total = int(rt.get_device_properties(device.index or 0).total_memory)
    except Exception:  # a runtime without device properties
        return None, f"{device.name}'s memory size is unknown"
    return total, f"the device has {total / 1e9:.1f} GB"


def host_available_memory() -> Optional[int]:
    from ..device import proc_kib

    kib = proc_kib("/proc/meminfo", "MemAvailable:")
    return None if kib is None else kib * 1024


def head_plan(backbone: str, head: str, num_classes: int, sample_rate: float, nproc: int,
              per_process_batch: int, device) -> dict:
    """What the head will hold per process, planned before a point runs by the head's registered
    plan (:func:`arcbench.head.plan`).

    ``head_memory_planned``: centres + gradient + momentum (fp32) of the largest shard
    (Partial FC) or of the whole replicated head; ``step_memory_planned`` adds one step's
    sampled copies and ``[batch, centres]`` logit buffers; ``fit_error``: one line when
    that exceeds :data:`FIT_FRACTION` of :func:`memory_per_process`, else None."""
    from ..head import plan
    from ..registry import get_backbone, get_head

    dim = get_backbone(backbone).embedding_size
    planned = plan(get_head(head), num_classes, dim, nproc, per_process_batch, sample_rate)
    step = planned.step_bytes
    limit, where = memory_per_process(device, nproc)
    error = None
    if limit is not None and step > FIT_FRACTION * limit:
        error = (f"{planned.summary}, about {step / 1e9:.1f} GB for a "
                 f"training step with its gradient and logits; {where}")
    return {"head_memory_planned": planned.state_bytes, "step_memory_planned": step, "fit_error": error}


def _eval_point(cfg: RunConfig, warmup: int, steps: int, device, engine: str = "torch",
                onnx_file: Optional[str] = None) -> dict:
    """Embedding throughput/latency at one batch size (forward only, synthetic or real images),
    with the model exactly as :func:`arcbench.verification.evaluate.evaluate` prepares it; ``engine`` onnxruntime
    runs ``onnx_file`` (the backbone exported once per bench) through :func:`arcbench.inference.engines.embedder`."""
    from ..data.device_feed import DeviceFeed
    from ..run.run_data import open_train_data
    from ..inference.engines import embedder
    from ..inference.weights import inference_model
    from ..record.stats import peak_memory
    from ..registry import get_backbone
    from ..record.timed_steps import time_steps

    spec = get_backbone(cfg.model.backbone)
    e = embedder(cfg.model.backbone, onnx_file if engine == "onnxruntime" else None, device, engine)
    channels_last = cfg.optim.channels_last and e.channels_last
    model = e.model
    if e.engine == "torch":
        # the module arcbench.verification.evaluate runs: a conv+BN folded copy where the spec allows it
        model = inference_model(model, channels_last=channels_last, fold_bn=spec.fold_bn)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.optim.compile:
            from ..train.model import compile_model

            model = compile_model(model, device, cfg.optim.compile_mode)  # as training compiles it
    elif cfg.optim.compile or cfg.amp:
        raise ArcbenchError("--compile and amp apply to the torch engine, not onnxruntime")
    data = open_train_data(cfg.replace(synthetic_steps=warmup + steps), device, 0, 1, input_size=spec.input_size)
    device.reset_peak_memory()
    it = itertools.cycle(data) if cfg.data.train_data != "synthetic" else iter(data)
    it = DeviceFeed(it, device, channels_last=channels_last, overlap=False)  # timed as data: no overlap

    def embed(batch):
        with device.autocast(cfg.amp):
            model(batch[0])

    with torch.inference_mode():  # the host-to-device copy is data time, not compute
        timed = time_steps(device, it, warmup, steps, embed)
    out = timed.figures(cfg.per_process_batch, host_wait=False)
    out.update(peak_memory(device), steps=warmup + steps, status="completed", train_set=data.name,
               synthetic=bool(getattr(data, "synthetic", False)))
    return out


def run_point(base: RunConfig, *, precision: str, batch_size: int, nproc: int, mode: str,
              warmup: int, steps: int, fresh_process: bool = False, engine: str = "torch",
              onnx_file: Optional[str] = None, min_seconds: float = 0.0) -> dict:
    """One grid point as a short run; ``fresh_process`` runs even one process through the launcher,
    so repeats share no warm caches, allocator state or compiled kernels.  ``engine``/``onnx_file``:
    what runs an eval point (see :func:`_eval_point`).  ``min_seconds``: a point
    whose timed steps took less is measured again with proportionally more steps (the first run
    was the probe; its run directory stays, marked superseded)."""
    point = dict(precision=precision, batch_size=batch_size, nproc=nproc, mode=mode, warmup=warmup,
                 fresh_process=fresh_process, engine=engine, onnx_file=onnx_file)
    summary = _run_point(base, steps=steps, **point)
    took = summary.get("timed_seconds")
    if min_seconds and summary.get("status") == "completed" and took and took < min_seconds:
        more = int(math.ceil(steps * min_seconds / took * 1.1))
        probe = summary.get("run_id")
        summary = _run_point(base, steps=more, **point)
        summary["probe_run_id"] = probe
    return summary


def _run_point(base: RunConfig, *, precision: str, batch_size: int, nproc: int, mode: str,
               warmup: int, steps: int, fresh_process: bool = False, engine: str = "torch",
               onnx_file: Optional[str] = None) -> dict:
    from ..run import runner

    cfg = base.replace(precision=precision, batch_size=batch_size * nproc, nproc=nproc, mode="bench",
                       max_steps=warmup + steps, epochs=10 ** 6 if base.data.train_data != "synthetic" else 1,
                       synthetic_steps=warmup + steps, timing_warmup=warmup, checkpoint_every=0,
                       eval_every=0, val_data=None, val_pairs=None, val_bin=None, quiet=True)
    if mode == "data":
        from .feed import data_point

        _, summary = runner.execute(cfg, body=lambda run: {"bench_mode": "data", "reason": None,
                                                           **data_point(run.cfg, warmup, steps, run.device)})
        return summary
    if mode == "eval":
        if nproc != 1:
            raise ArcbenchError("--mode eval measures one process; use --nproc 1")
        _, summary = runner.execute(cfg, body=lambda run: {"bench_mode": "eval", "reason": None, "engine": engine,
                                                           **_eval_point(run.cfg, warmup, steps, run.device,
                                                                         engine, onnx_file)})
        return summary
    try:
        run_dir, summary = runner.execute(cfg, fresh_process=fresh_process)
    except runner.RunFailed as exc:
        return {"status": "failed", "reason": str(exc), "precision": precision, "nproc": nproc,
                "batch_size": batch_size * nproc}
    return runner.annotate(run_dir, bench_mode="train")


def bench(base: RunConfig, *, precisions: List[str], batch_sizes: List[int], nprocs: List[int],
          mode: str = "train", warmup: int = 5, steps: Optional[int] = None, log=None,
          num_classes: Optional[List[int]] = None, sample_rates: Optional[List[float]] = None,
          repeat: int = 1, engines: Optional[List[str]] = None) -> List[dict]:
    """Run the grid and return one row per point, with the derived ratios filled in.

    ``repeat`` > 1 measures each point that many times, each in a fresh process, and
    reports the median over repeats with the spread (as MLPerf reports its results).

    ``num_classes`` (synthetic data) and ``sample_rates`` (Partial FC) are axes too;
    None: ``base.data.synthetic_classes`` and ``base.model.sample_rate``.  ``mode`` may be a list
    (``["data", "train"]``): data points (the input pipeline alone, one process, no
    precision) run once per batch size, and pair with the train rows by ``feed_ratio``.

    ``engines`` (eval mode): torch and/or onnxruntime; the backbone is exported to ONNX once, into a
    temporary folder, and every onnxruntime point runs that file.  ONNX Runtime runs the fp32 graph,
    so amp points are measured for torch only (``log`` says so)."""
    import tempfile

    from .. import registry

    engines = list(engines or ["torch"])
    if engines != ["torch"] and "eval" not in ([mode] if isinstance(mode, str) else mode):
        raise ArcbenchError("--engine is an axis of --mode eval (training runs in torch)")
    device = registry.require_device(base.device)
    device.bind(0)  # the parent measures eval points and FLOPs itself; workers bind their own cards
    min_seconds = 0.0
    if steps is None:  # the device's default: at least 200 steps and 10 s on an accelerator
        steps, min_seconds = default_steps(device)
    with tempfile.TemporaryDirectory(prefix="arcbench-bench-onnx-") as tmp:
        onnx_file = _export_for_bench(base, device, tmp, log) if "onnxruntime" in engines else None
        return _bench_grid(base, device, precisions, batch_sizes, nprocs, mode, warmup, steps, log,
                           num_classes, sample_rates, repeat, engines, onnx_file, min_seconds)


def _export_for_bench(base: RunConfig, device, folder: str, log) -> str:
    """The backbone (random initialisation, as torch points run it) exported once for the onnxruntime points;
    checks up front that ONNX Runtime has the device's provider."""
    from ..inference.engines import providers_for
    from ..inference.onnx_export import backbone_metadata, export_module
    from ..registry import create_backbone, get_backbone

    providers_for(device)
    spec = get_backbone(base.model.backbone)
    path = os.path.join(folder, f"{base.model.backbone}.onnx")
    info = export_module(create_backbone(base.model.backbone), path, input_size=spec.input_size, fold_bn=spec.fold_bn,
                         name=base.model.backbone, metadata=backbone_metadata(base.model.backbone, spec, None, "fp32"))
    if log:
        log(f"exported {base.model.backbone} to ONNX for the onnxruntime points ({info['exporter']} exporter, "
            f"opset {info['opset']}, {info['seconds']:.1f} s)")
    return path


def _bench_grid(base, device, precisions, batch_sizes, nprocs, mode, warmup, steps, log, num_classes,
                sample_rates, repeat, engines, onnx_file, min_seconds) -> List[dict]:
    from .. import registry
    from .feed import feed_ratios

    rows = []
    classes = list(num_classes or [base.data.synthetic_classes])
    rates = list(sample_rates or [base.model.sample_rate])
    grid = []
    for m in ([mode] if isinstance(mode, str) else list(mode)):
        if m == "data":  # the pipeline has no precision and is one process's
            grid += [(m, classes[0], rates[0], bs, 1, "torch", None) for bs in batch_sizes]
        else:  # the engine is an axis of eval points; ONNX Runtime runs the fp32 graph only
            grid += [(m, c, r, bs, n, eng, prec) for c, r, bs, n, eng, prec
                     in itertools.product(classes, rates, batch_sizes, nprocs, engines if m == "eval" else ["torch"],
                                          precisions)
                     if not (eng == "onnxruntime" and prec != "fp32")]
    if log and "onnxruntime" in engines and any(p != "fp32" for p in precisions):
        log("onnxruntime runs the exported fp32 graph: amp points are measured for torch only")
    for i, (mode, c, r, bs, n, eng, prec) in enumerate(grid, 1):
        point = base.replace(device=device.name, synthetic_classes=c, sample_rate=r)
        what = (f"{c:,} classes" + (f" r={r:g}" if base.model.head in registry.heads_taking("sample_rate") else "")
                if base.data.train_data == "synthetic" and mode == "train" else "")
        if log:
            log(f"[{i}/{len(grid)}] {base.model.backbone} {mode}{' ' + eng if len(engines) > 1 else ''}"
                f"{' ' + prec if prec else ''} batch {bs} x {n} proc"
                f"{' ' + what if what else ''} on {device.name} ...")
        if base.optim.compile:
            _reset_compiler()  # each point compiles afresh: no recompile limit reached across the grid
        plan = {}
        if mode == "train" and base.data.train_data == "synthetic":
            plan = head_plan(base.model.backbone, base.model.head, c, r, n, bs, device)
        if plan.get("fit_error"):  # the command prints the one line with the table
            s = {"status": SKIPPED, "reason": plan["fit_error"], "synthetic": True}
        else:
            s = over_repeats([run_point(point, precision=prec or "fp32", batch_size=bs, nproc=n, mode=mode, warmup=warmup,
                                        steps=steps, fresh_process=repeat > 1, engine=eng, onnx_file=onnx_file,
                                        min_seconds=min_seconds)
                              for _ in range(max(1, repeat))])
        row = {k: s.get(k) for k in ROW_KEYS + REPEAT_KEYS}
        row.update(device=device.name, backbone=base.model.backbone, mode=mode, engine=eng, precision=prec, nproc=n,
                   batch_size=bs * n, per_process_batch=bs, data=base.data.train_data,
                   head=base.model.head if mode == "train" else None,
                   num_classes=s.get("num_classes") or (c if base.data.train_data == "synthetic" and mode == "train"
                                                        else None),
                   sample_rate=s.get("sample_rate") or (r if mode == "train" else None),
                   head_memory_planned=plan.get("head_memory_planned"),
                   run_dir=s.get("run_id") and os.path.join(os.path.abspath(base.recording.out), s["run_id"]))
        rows.append(row)
    derive(rows, device, base)
    feed_ratios(rows)
    from ..run.runner import annotate

    for row in rows:
        if row.get("run_dir") and os.path.isdir(row["run_dir"]):
            annotate(row["run_dir"], amp_speedup=row["amp_speedup"], scaling_efficiency=row["scaling_efficiency"],
                     mfu=row["mfu"], mfu_note=row["mfu_note"], flops_per_image=row["flops_per_image"],
                     precision_label=row["precision"], feed_ratio=row["feed_ratio"])
    return rows


def _reset_compiler() -> None:
    """Forget every compiled graph and its guards (``torch._dynamo.reset()``): a grid compiles
    each point in this process, and dynamo's recompile limit would silently turn later points eager."""
    try:
        import torch._dynamo

        torch._dynamo.reset()
    except (ImportError, AttributeError):  # pragma: no cover - torch without dynamo
        pass


REPEAT_KEYS = ("repeats", "throughput_repeats", "throughput_spread", "throughput_min", "throughput_max",
               "repeat_run_ids")


def over_repeats(summaries: List[dict]) -> dict:
    """The median repeat's summary, with every repeat's throughput and their spread.

    ``throughput_spread`` = (max - min) / median over the repeats; a repeat that did not
    complete makes the point failed (its reason is kept)."""
    if len(summaries) == 1:
        return summaries[0]
    bad = [s for s in summaries if s.get("status") != "completed"]
    if bad:
        return {**bad[0], "repeats": len(summaries)}
    by_speed = sorted(summaries, key=lambda s: s.get("throughput_median") or 0.0)
    values = [s.get("throughput_median") or 0.0 for s in by_speed]
    median = float(np.median(values))
    middle = by_speed[len(by_speed) // 2]
    return {**middle, "throughput_median": median, "repeats": len(summaries),
            "throughput_repeats": [s.get("throughput_median") for s in summaries],
            "throughput_min": values[0], "throughput_max": values[-1],
            "throughput_spread": (values[-1] - values[0]) / median if median else None,
            "repeat_run_ids": [s.get("run_id") for s in summaries]}


def derive(rows: List[dict], device, base: RunConfig) -> None:
    """Fill amp_speedup, scaling_efficiency and mfu from rows measured side by side."""
    def key(r, **over):
        d = {k: r.get(k) for k in ("backbone", "mode", "engine", "precision", "nproc", "per_process_batch",
                                   "num_classes", "sample_rate")}
        d.update(over)
        return tuple(sorted(d.items()))

    index = {key(r): r for r in rows}
    flops_cache: Dict[tuple, Optional[int]] = {}
    for r in rows:
        if r["mode"] == "data":  # no model runs: no speedup, scaling or FLOPs
            r.update(amp_speedup=None, scaling_efficiency=None, mfu=None, mfu_note=None, flops_per_image=None)
            continue
        thr = r.get("throughput_median")
        ref = index.get(key(r, precision="fp32"))
        r["amp_speedup"] = (thr / ref["throughput_median"]) if (
            r["precision"] == "amp" and ref and thr and ref.get("throughput_median")) else None
        one = index.get(key(r, nproc=1))
        r["scaling_efficiency"] = (thr / (r["nproc"] * one["throughput_median"])) if (
            one and thr and one.get("throughput_median")) else None
        fk = (r["backbone"], r["mode"], r.get("num_classes"), r.get("sample_rate"), r["nproc"])
        if fk not in flops_cache:
            per_img = step_flops(r["backbone"], base.model.head, 1, r["mode"], r.get("num_classes") or base.data.synthetic_classes,
                                 r.get("sample_rate") or 1.0, r["nproc"])
            flops_cache[fk] = per_img
        per_img = flops_cache[fk]
        r["flops_per_image"] = per_img
        # the peak for the dtype that ran (the run records its AMP dtype)
        dtype = getattr(torch, r.get("amp_dtype") or "", None) or device.amp_dtype if r["precision"] == "amp" \
            else torch.float32
        r["mfu"], r["mfu_note"] = mfu(per_img, thr, device.peak_flops(dtype), r["nproc"])
    for r in rows:  # after matching: say how "fp32" really ran (TF32 tensor cores on recent GPUs)
        if r["precision"]:
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
