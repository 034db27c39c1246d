"""`arcbench bench`: throughput, AMP speedup, scaling efficiency and MFU over a grid."""
from __future__ import annotations

from typing import List

import click

from ..config import AMP_DTYPES, COMPILE_MODES
from ..record.stats import MIN_TAIL_SAMPLES
from .output import echo_json, echo_table
from .options import RegistryOption


MODES = ("train", "eval", "data")


def _csv(kind):
    def parse(ctx, param, value):
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        try:
            return [kind(v) for v in items]
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}")
    return parse


@click.command("bench", context_settings={"max_content_width": 110})
@click.option("--device", default="auto", show_default=True, cls=RegistryOption, names_of="device",
              help="Device plugin: auto (the first available of {names}) or one of them.")
@click.option("--backbone", default="mobilefacenet", show_default=True, cls=RegistryOption, names_of="backbone",
              help="Backbone plugin: {names}.")
@click.option("--head", default=None, cls=RegistryOption, names_of="head",
              help="Margin head (train mode): {names}. Default arcface; partial_fc when --sample-rate "
                   "is given.")
@click.option("--precision", default="fp32,amp", show_default=True, callback=_csv(str),
              help="Comma-separated: fp32, amp. AMP speedup = amp img/s / fp32 img/s.")
@click.option("--batch-size", default="64", show_default=True, callback=_csv(int),
              help="Comma-separated batch sizes PER PROCESS.")
@click.option("--nproc", default="1", show_default=True, callback=_csv(int),
              help="Comma-separated process counts; scaling efficiency = img/s at N / (N x img/s at 1).")
@click.option("--warmup", default=5, show_default=True, type=int, help="Warm-up steps, excluded from the figures.")
@click.option("--steps", default=None, type=int,
              help="Timed steps (median and percentiles over them). Default: 20 on the CPU; on an "
                   "accelerator at least 200 and at least 10 s of them (a short point is run again "
                   "with more steps). p95/p99 need 100 timed steps.")
@click.option("--data", default="synthetic", show_default=True,
              help="'synthetic' (random tensors on the device: compute only) or training data (adds the input pipeline).")
@click.option("--mode", default="train", show_default=True, callback=_csv(str),
              help="Comma-separated: train (forward+backward+step), eval (embedding forward only), data "
                   "(the input pipeline alone for --data: read, decode, augment, collate, pin, copy, "
                   "normalise; one process). With data and train rows both carry feed_ratio = data img/s "
                   "/ train img/s; below 1.0 the input pipeline is the bottleneck.")
@click.option("--engine", "engines", default="torch", show_default=True, callback=_csv(str),
              help="Comma-separated engines for --mode eval: torch, onnxruntime (the backbone exported to ONNX "
                   "once, run by ONNX Runtime on the --device's provider; fp32 points only).")
@click.option("--compile", is_flag=True, help="torch.compile the model (and the loss); each point compiles afresh.")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default=None,
              help="torch.compile mode (implies --compile); the device plugin says which it supports.")
@click.option("--amp-dtype", type=click.Choice(list(AMP_DTYPES)), default=None,
              help="dtype of the amp points (default: the device's; bf16 on CUDA 8.0+ and the CPU).")
@click.option("--workers", type=int, default=None, help="DataLoader workers for real data.")
@click.option("--decode", type=click.Choice(["host", "device"]), default="host", show_default=True,
              help="Real data: decode JPEGs on the host, or on the device (torchvision nvJPEG, CUDA; "
                   "not bit-identical, marked in the rows).")
@click.option("--num-classes", "--classes", "classes", default="1000", show_default=True, callback=_csv(int),
              help="Comma-separated head class counts on synthetic data, e.g. 10575,93431,2000000 "
                   "(CASIA-WebFace, MS1MV3, WebFace42M identities).")
@click.option("--sample-rate", default=None, callback=lambda c, p, v: None if v is None else _csv(float)(c, p, v),
              help="Comma-separated Partial FC sample rates, e.g. 1.0,0.1 (implies --head partial_fc). "
                   "A point whose head cannot fit the memory is skipped with one line saying why.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1),
              help="Measure each grid point N times, each in a fresh process; rows report the median over "
                   "repeats and the spread ((max - min) / median), as MLPerf reports its results.")
@click.option("--out", default="runs", show_default=True, help="Each grid point is saved as a run under OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows.")
def bench_cmd(device, backbone, head, precision, batch_size, nproc, warmup, steps, data, mode, engines, compile,
              workers, decode, classes, sample_rate, repeat, out, as_json, compile_mode=None, amp_dtype=None):
    """Measure speed over a grid of precision x batch size x processes.

    Every point runs WARMUP steps, then STEPS timed steps, each timed from the end of the
    previous step to its own end (device events where the device has them, read once per
    log interval; else a sync before each mark), so host work between steps counts. Rows report img/s (median, mean), step latency p50/p95/p99, the
    data-wait fraction, peak memory, amp_speedup, scaling_efficiency and mfu (model FLOPs
    per image x img/s / the device plugin's peak; forward FLOPs from torch.utils.flop_counter,
    train FLOPs = 3 x forward; empty when the peak is unknown, e.g. on CPU). Synthetic data
    is labelled synthetic.

    Class counts and Partial FC sample rates are axes too (--num-classes, --sample-rate):
    rows add the head's per-process memory (centres, gradient, optimiser state) and FLOPs
    count only the sampled centres.

    --mode data runs only the input pipeline for --data (as a training point would, with
    the same batch and workers) and reports img/s, img/s per worker and the ratio to a bare
    PIL decode loop over the same files; --mode data,train adds a feed column: data img/s /
    train img/s, below 1.0 when the host cannot feed the card.
    """
    from ..bench.grid import bench
    from ..config import RunConfig

    head, rates = _checked_axes(device, head, precision, batch_size, nproc, warmup, steps, data, mode, engines,
                                compile, decode, classes, sample_rate)
    base = RunConfig(device=device, backbone=backbone, head=head, train_data=data,
                     compile=compile or compile_mode is not None, compile_mode=compile_mode, amp_dtype=amp_dtype,
                     workers=workers, decode=decode, synthetic_classes=classes[0], sample_rate=rates[0], out=out)
    log = None if as_json else (lambda m: click.echo(m, err=True))
    rows = bench(base, precisions=precision, batch_sizes=batch_size, nprocs=nproc, mode=mode,
                 warmup=warmup, steps=steps, log=log, num_classes=classes, sample_rates=rates, repeat=repeat,
                 engines=engines)
    if as_json:
        echo_json(rows)
        return
    show = [_row_view(r, engines, classes, rates, repeat, mode) for r in rows]
    # the figures the rows were made for stay, even when equal on every row
    echo_table(show, keep=("precision", "img/s", "amp speedup", "scaling eff", "feed", "workers", "img/s/worker",
                           "vs PIL"))
    for line in _footnotes(rows, mode, data):
        click.echo(line)
    click.echo(f"runs saved under {out}/  ->  arcbench report {out}")


def _class_columns(r: dict, classes, rates) -> dict:
    """classes, r and the head's memory per process: shown when the grid varies them or the
    head samples its classes, as Partial FC does (the numbers then matter)."""
    from .. import registry

    if len(classes) == 1 and rates == [1.0] and r.get("head") not in registry.heads_taking("sample_rate"):
        return {}
    mem = r.get("head_memory") or r.get("head_memory_planned")
    return {"classes": _f(r.get("num_classes"), ","), "r": _f(r.get("sample_rate"), "g"),
            "head MiB": _f(mem and mem / 2**20, ".0f") + ("" if r.get("head_memory") or not mem else " (plan)")}


_SHORT_DTYPE = {"bfloat16": "bf16", "float16": "fp16"}


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def _checked_axes(device, head, precision, batch_size, nproc, warmup, steps, data, mode, engines, compile, decode,
                  classes, sample_rate):
    """Refuse a grid that cannot run, in one line, before any point starts; returns (head, sample rates)."""
    from .. import registry
    from ..errors import ArcbenchError

    for m in mode:
        if m not in MODES:
            raise ArcbenchError(f"--mode: unknown {m!r}; known: {', '.join(MODES)}")
    if "data" in mode and data == "synthetic":
        raise ArcbenchError("--mode data measures the input pipeline: give --data an image folder, "
                            "annotation file or RecordIO folder")
    for p in precision:
        if p not in ("fp32", "amp"):
            raise ArcbenchError(f"--precision: unknown {p!r}; known: fp32, amp")
    for e in engines:
        if e not in ("torch", "onnxruntime"):
            raise ArcbenchError(f"--engine: unknown {e!r}; known: torch, onnxruntime")
    if engines != ["torch"] and "eval" not in mode:
        raise ArcbenchError("--engine is an axis of --mode eval (training runs in torch)")
    if "onnxruntime" in engines and "fp32" not in precision:
        raise ArcbenchError("--engine onnxruntime runs the fp32 graph: include fp32 in --precision")
    if "onnxruntime" in engines and compile:
        raise ArcbenchError("--compile applies to the torch engine; drop it or --engine onnxruntime")
    if warmup < 0 or (steps is not None and steps <= 0):
        raise ArcbenchError("--steps must be positive and --warmup not negative")
    if any(b <= 0 for b in batch_size) or any(n <= 0 for n in nproc):
        raise ArcbenchError("--batch-size and --nproc must be positive")
    if not classes or any(c <= 0 for c in classes):
        raise ArcbenchError("--num-classes must be positive")
    if "eval" in mode and (len(classes) > 1 or sample_rate):
        raise ArcbenchError("--num-classes and --sample-rate are axes of --mode train (eval runs the backbone only)")
    if data != "synthetic" and len(classes) > 1:
        raise ArcbenchError("--num-classes is an axis for synthetic data; real data has its own classes")
    if decode == "device" and data != "synthetic":
        from ..data.device_decode import check

        check(registry.require_device(device))  # refused in one line before any point runs
    head = head or ("partial_fc" if sample_rate else "arcface")
    rates = sample_rate or [1.0]
    for r in rates:
        if not 0.0 < r <= 1.0:
            raise ArcbenchError(f"--sample-rate must be in (0, 1], got {r}")
    if rates != [1.0] and "sample_rate" not in registry.get_head(head).params:
        raise ArcbenchError(f"--sample-rate applies to --head {' or '.join(registry.heads_taking('sample_rate'))}, "
                            f"not {head}")
    return head, rates


def _row_view(r: dict, engines, classes, rates, repeat: int, mode) -> dict:
    """One bench row as the terminal table shows it."""
    return {
        "backbone": r["backbone"], "mode": r["mode"],
        **({"engine": r.get("engine")} if engines != ["torch"] else {}),
        "precision": (r["precision"] or "-") + (f" {_SHORT_DTYPE.get(r['amp_dtype'], r['amp_dtype'])}"
                                                if r.get("amp_dtype") and r["precision"] == "amp" else ""),
        "nproc": r["nproc"],
        "batch": r["batch_size"], **_class_columns(r, classes, rates),
        "img/s": _f(r.get("throughput_median"), ".1f"),
        **({"spread": _f(r.get("throughput_spread"), ".1%")} if repeat > 1 else {}),
        "p50 ms": _f(r.get("latency_p50") and r["latency_p50"] * 1e3, ".1f"),
        "p99 ms": _f(r.get("latency_p99") and r["latency_p99"] * 1e3, ".1f"),
        "data wait": _f(r.get("data_wait_fraction"), ".1%"),
        "peak MiB": _f(r.get("peak_memory") and r["peak_memory"] / 2**20, ".0f"),
        "amp speedup": _f(r.get("amp_speedup"), ".2f"),
        "scaling eff": _f(r.get("scaling_efficiency"), ".2f"),
        "mfu": _f(r.get("mfu"), ".1%"),
        **({"feed": _f(r.get("feed_ratio"), ".2f"), "workers": _f(r.get("workers"), "d"),
            "img/s/worker": _f(r.get("throughput_per_worker"), ".1f"),
            "vs PIL": _f(r.get("decode_ratio"), ".2f")} if "data" in mode else {}),
        "status": r.get("status"),
    }


def _footnotes(rows: List[dict], mode, data: str) -> List[str]:
    """What the table's figures mean, for the kinds of rows it has."""
    from ..bench.feed import feed_words

    lines = []
    if any(r.get("decode") == "device" for r in rows):
        lines.append("(--decode device: JPEGs decoded on the card with nvJPEG; pixels are not the reference's)")
    lines += feed_words(rows)
    if "data" in mode:
        lines.append("(data rows: the input pipeline alone, one process; vs PIL = img/s per worker / a bare PIL "
                     "decode loop over the same files in this process)")
    for r in rows:
        if r.get("status") == "skipped (does not fit)":
            lines.append(f"skipped: {r['num_classes']:,} classes, r={r['sample_rate']:g}, {r['nproc']} proc: "
                         f"{r['reason']}")
    short = [r for r in rows if r.get("timed_steps") and r.get("latency_p99") is None]
    if short:
        lines.append(f"(p99: not reported below {MIN_TAIL_SAMPLES} timed steps; these points timed "
                     f"{', '.join(sorted({str(r['timed_steps']) for r in short}))})")
    timers = sorted({r["step_timer"] for r in rows if r.get("step_timer")})
    if timers:
        lines.append(f"(step times: {', '.join(timers)}; end of one step to the end of the next)")
    if rows and rows[0].get("synthetic"):
        lines.append("(synthetic data: compute throughput only)" if data == "synthetic" else
                     "(synthetic data: generated face JPEGs, decoded for real)")
    return lines
