"""`arcbench bench`: throughput, AMP speedup, scaling efficiency and MFU over a grid."""
from __future__ import annotations

import click

from ..config import AMP_DTYPES, COMPILE_MODES
from ..stats import MIN_TAIL_SAMPLES
from .output import echo_json, echo_table
from .options import RegistryOption


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
@click.option("--mode", type=click.Choice(["train", "eval"]), default="train", show_default=True,
              help="train: forward+backward+step; eval: embedding forward only.")
@click.option("--compile", is_flag=True, help="torch.compile the model (and the loss); each point compiles afresh.")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default=None,
              help="torch.compile mode (implies --compile); the device plugin says which it supports.")
@click.option("--amp-dtype", type=click.Choice(list(AMP_DTYPES)), default=None,
              help="dtype of the amp points (default: the device's; bf16 on CUDA 8.0+ and the CPU).")
@click.option("--workers", type=int, default=None, help="DataLoader workers for real data.")
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
def bench_cmd(device, backbone, head, precision, batch_size, nproc, warmup, steps, data, mode, compile,
              workers, classes, sample_rate, repeat, out, as_json, compile_mode=None, amp_dtype=None):
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
    """
    from .. import registry
    from ..bench import bench
    from ..config import RunConfig
    from ..errors import ArcbenchError

    for p in precision:
        if p not in ("fp32", "amp"):
            raise ArcbenchError(f"--precision: unknown {p!r}; known: fp32, amp")
    if warmup < 0 or (steps is not None and steps <= 0):
        raise ArcbenchError("--steps must be positive and --warmup not negative")
    if any(b <= 0 for b in batch_size) or any(n <= 0 for n in nproc):
        raise ArcbenchError("--batch-size and --nproc must be positive")
    if not classes or any(c <= 0 for c in classes):
        raise ArcbenchError("--num-classes must be positive")
    if mode == "eval" and (len(classes) > 1 or sample_rate):
        raise ArcbenchError("--num-classes and --sample-rate are axes of --mode train (eval runs the backbone only)")
    if data != "synthetic" and len(classes) > 1:
        raise ArcbenchError("--num-classes is an axis for synthetic data; real data has its own classes")
    head = head or ("partial_fc" if sample_rate else "arcface")
    rates = sample_rate or [1.0]
    for r in rates:
        if not 0.0 < r <= 1.0:
            raise ArcbenchError(f"--sample-rate must be in (0, 1], got {r}")
    if rates != [1.0] and "sample_rate" not in registry.get_head(head).params:
        raise ArcbenchError(f"--sample-rate applies to --head {' or '.join(registry.heads_taking('sample_rate'))}, "
                            f"not {head}")
    base = RunConfig(device=device, backbone=backbone, head=head, train_data=data,
                     compile=compile or compile_mode is not None, compile_mode=compile_mode, amp_dtype=amp_dtype,
                     workers=workers, synthetic_classes=classes[0], sample_rate=rates[0], out=out)
    log = None if as_json else (lambda m: click.echo(m, err=True))
    rows = bench(base, precisions=precision, batch_sizes=batch_size, nprocs=nproc, mode=mode,
                 warmup=warmup, steps=steps, log=log, num_classes=classes, sample_rates=rates, repeat=repeat)
    if as_json:
        echo_json(rows)
        return
    show = []
    for r in rows:
        show.append({
            "backbone": r["backbone"], "mode": r["mode"],
            "precision": r["precision"] + (f" {_SHORT_DTYPE.get(r['amp_dtype'], r['amp_dtype'])}"
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
            "mfu": _f(r.get("mfu"), ".1%"), "status": r.get("status"),
        })
    echo_table(show)
    for r in rows:
        if r.get("status") == "skipped (does not fit)":
            click.echo(f"skipped: {r['num_classes']:,} classes, r={r['sample_rate']:g}, {r['nproc']} proc: "
                       f"{r['reason']}")
    short = [r for r in rows if r.get("timed_steps") and r.get("latency_p99") is None]
    if short:
        click.echo(f"(p99: not reported below {MIN_TAIL_SAMPLES} timed steps; these points timed "
                   f"{', '.join(sorted({str(r['timed_steps']) for r in short}))})")
    timers = sorted({r["step_timer"] for r in rows if r.get("step_timer")})
    if timers:
        click.echo(f"(step times: {', '.join(timers)}; end of one step to the end of the next)")
    if rows and rows[0].get("synthetic"):
        click.echo("(synthetic data: compute throughput only)")
    click.echo(f"runs saved under {out}/  ->  arcbench report {out}")


def _class_columns(r: dict, classes, rates) -> dict:
    """classes, r and the head's memory per process: shown when the grid varies them or the
    head is Partial FC (the numbers then matter)."""
    if len(classes) == 1 and rates == [1.0] and r.get("head") != "partial_fc":
        return {}
    mem = r.get("head_memory") or r.get("head_memory_planned")
    return {"classes": _f(r.get("num_classes"), ","), "r": _f(r.get("sample_rate"), "g"),
            "head MiB": _f(mem and mem / 2**20, ".0f") + ("" if r.get("head_memory") or not mem else " (plan)")}


_SHORT_DTYPE = {"bfloat16": "bf16", "float16": "fp16"}


def _f(v, spec):
    return "-" if v is None else format(v, spec)
