#!/usr/bin/env python
"""Side-by-side speed ratios: arcbench vs a plain PyTorch loop written the way the seed is.

    python benchmarks/compare_reference.py [--quick] [--compile] [--only a,b,c,d] [--json out.json]

Every ratio is measured in ONE process with the two sides interleaved round by
round (A B, B A, A B ...), so load from other processes hits both alike; the
figures are medians over rounds.  Nothing here passes or fails on a timing: the
targets are printed next to the measured ratios.

(a) training img/s, mobilefacenet fp32 batch 32, synthetic data: arcbench's real
    ``Trainer.train_epoch`` (recording and logging on) vs a minimal seed-style loop
    (model + ArcFace head, SGD nesterov, NLL of log_softmax, contiguous tensors,
    no compile, ``.item()`` of loss and accuracy every step).  Target >= 1.10x,
    >= 1.25x with --compile (arcbench compiled, the seed stays eager).
(b) harness overhead: the same Trainer with recording + log lines + a progress bar
    vs ``record=False, quiet=True``.  Target <= 3%.  Also reported: the per-step
    bookkeeping time measured directly (epoch wall time minus the timed steps).
(c) evaluation embeddings/s from JPEG files: ``arcbench.verification.evaluate`` vs a plain
    DataLoader + PIL + fp32 ``no_grad`` loop over the same files, same batch size
    and worker count.  Target >= 1.3x.  Also reports the largest embedding
    difference between the two (they must agree).
(d) input pipeline: decode + augment img/s of the training loader per worker
    count, and the data-wait fraction of a mobilefacenet run on those JPEGs.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("ARCBENCH_REFERENCE", REPO.parent / "shared" / "reference"))
TARGETS = {"train": 1.10, "train_compile": 1.25, "overhead": 0.03, "eval": 1.30}


def log(msg: str = "") -> None:
    print(msg, flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def interleave(sides: dict, rounds: int, label: str):
    """Run each side's callable once per round, alternating the order (A B, B A, ...).

    Returns ``{name: [seconds per unit of work, one per round]}``; a side's callable
    returns ``(seconds, units)``.
    """
    names = list(sides)
    out = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            secs, units = sides[n]()
            out[n].append(secs / max(units, 1))
        log(f"  {label} round {r + 1}/{rounds}: " + "  ".join(f"{n} {out[n][-1]:.3f}s" for n in names))
    return out


def ratios(res: dict, base: str, new: str) -> dict:
    """Speed-up of ``new`` over ``base`` (time_base / time_new) three ways.

    ``paired_median`` (the headline): the median over rounds of each round's own ratio,
    so a burst of load from other processes, which hits both sides of one round
    alike, cancels out.  ``of_medians`` and ``of_minimums`` are given beside it; when
    the three disagree much the host was too noisy for the figure to mean much.
    """
    b, n = np.asarray(res[base]), np.asarray(res[new])
    paired = b / n
    q1, q3 = np.percentile(paired, [25, 75])
    return {"paired_median": float(np.median(paired)), "paired_iqr": [float(q1), float(q3)],
            "of_medians": float(np.median(b) / np.median(n)), "of_minimums": float(b.min() / n.min())}


def fmt_ratio(r: dict) -> str:
    return (f"{r['paired_median']:.3f}x (paired median; IQR {r['paired_iqr'][0]:.2f}-{r['paired_iqr'][1]:.2f}, "
            f"ratio of medians {r['of_medians']:.3f}, of minimums {r['of_minimums']:.3f})")


# --------------------------------------------------------------------- (a), (b)
def make_trainer(batch: int, steps: int, *, record: bool, compile: bool = False, run_dir=None,
                 progress: bool = False, classes: int = 1000, seed: int = 0):
    """An arcbench Trainer over SyntheticBatches; each ``train_epoch()`` runs ``steps`` steps."""
    from arcbench import registry
    from arcbench.config import RunConfig
    from arcbench.data.synthetic_batches import SyntheticBatches
    from arcbench.record.recorder import Recorder
    from arcbench.train.trainer import Trainer

    device = registry.require_device("cpu")
    cfg = RunConfig(device="cpu", backbone="mobilefacenet", batch_size=batch, train_data="synthetic",
                    synthetic_classes=classes, synthetic_steps=steps, epochs=10 ** 6, eval_every=0,
                    checkpoint_every=0, compile=compile, record=record, quiet=not record, timing_warmup=0,
                    log_interval=min(20, steps))
    torch.manual_seed(seed)
    data = SyntheticBatches(batch, num_classes=classes, steps_per_epoch=steps, device=device.torch_device(),
                            seed=seed)
    rec = Recorder(run_dir, enabled=record) if run_dir else None
    sink = io.StringIO()
    trainer = Trainer(cfg, device, data, recorder=rec, log=lambda m: sink.write(m + "\n"))
    if progress:
        from tqdm import tqdm

        trainer._progress = lambda n: tqdm(total=n, file=sink, mininterval=0, desc="train")  # a live bar
    return trainer


def trainer_round(trainer):
    def run():
        n0 = len(trainer.metrics.times.compute)
        t = time.perf_counter()
        trainer.train_epoch()
        wall = time.perf_counter() - t
        steps = len(trainer.metrics.times.compute) - n0
        timed = sum(trainer.metrics.times.compute[n0:]) + sum(trainer.metrics.times.data[n0:])
        trainer.bookkeeping = getattr(trainer, "bookkeeping", []) + [(wall - timed) / max(steps, 1)]
        return wall, steps
    return run


def make_seed_loop(batch: int, steps: int, classes: int = 1000, seed: int = 0):
    """The seed's training step, written plainly: no channels_last, no foreach, .item() each step."""
    from arcbench.config import RunConfig
    from arcbench.train.trainer import build_face_model

    torch.manual_seed(seed)
    model = build_face_model(RunConfig(backbone="mobilefacenet"), classes)  # same backbone + ArcFace head
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 112, 112, generator=g) * 2 - 1
    labels = torch.randint(0, classes, (batch,), generator=g)
    state = {"loss": 0.0, "acc": 0.0}

    def run():
        t = time.perf_counter()
        for _ in range(steps):
            outputs = model(images, labels)
            loss = F.nll_loss(F.log_softmax(outputs, -1), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            state["loss"] += loss.item()
            with torch.no_grad():
                state["acc"] += torch.mean((torch.argmax(F.softmax(outputs, dim=-1), dim=-1) == labels)
                                           .type(torch.FloatTensor)).item()
        return time.perf_counter() - t, steps
    return run


def section_train(args, out: dict) -> None:
    b, k, rounds = args.batch, args.steps, args.rounds
    log(f"\n(a) training throughput: mobilefacenet fp32 batch {b}, synthetic, {k} steps x {rounds} rounds"
        f"{' (arcbench compiled)' if args.compile else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        arc = make_trainer(b, k, record=True, compile=args.compile, run_dir=os.path.join(tmp, "run"))
        seed = make_seed_loop(b, k)
        t = time.perf_counter()
        warm_arc = trainer_round(arc)
        warm_arc()  # warm-up (and compilation with --compile)
        first = time.perf_counter() - t
        seed()
        res = interleave({"arcbench": warm_arc, "seed": seed}, rounds, "(a)")
    a, s = med(res["arcbench"]), med(res["seed"])
    r = ratios(res, "seed", "arcbench")
    key = "train_compile" if args.compile else "train"
    out[key] = {"arcbench_img_s": b / a, "seed_img_s": b / s, "ratio": r["paired_median"], "ratios": r,
                "target": TARGETS[key], "batch": b, "steps_per_round": k, "rounds": rounds,
                "warmup_seconds": first, "per_round_s_per_step": res}
    log(f"  arcbench {b / a:.2f} img/s   seed {b / s:.2f} img/s (medians)   speed-up {fmt_ratio(r)}"
        f"   target >= {TARGETS[key]:.2f}x" + (f"   [first epoch incl. compile: {first:.0f}s]" if args.compile else ""))


def section_overhead(args, out: dict) -> None:
    b, k, rounds = args.batch, args.steps, args.rounds
    log(f"\n(b) harness overhead: recording + log lines + progress bar on vs record=False, batch {b}")
    with tempfile.TemporaryDirectory() as tmp:
        on = make_trainer(b, k, record=True, run_dir=os.path.join(tmp, "on"), progress=True)
        off = make_trainer(b, k, record=False, run_dir=os.path.join(tmp, "off"))
        r_on, r_off = trainer_round(on), trainer_round(off)
        r_on(), r_off()
        on.bookkeeping, off.bookkeeping = [], []
        res = interleave({"record_on": r_on, "record_off": r_off}, rounds, "(b)")
        lines = sum(1 for _ in open(os.path.join(tmp, "on", "metrics.jsonl")))
    a, o = med(res["record_on"]), med(res["record_off"])
    r = ratios(res, "record_on", "record_off")  # > 1: recording costs time
    book = med(on.bookkeeping)
    out["overhead"] = {"record_on_img_s": b / a, "record_off_img_s": b / o, "overhead": r["paired_median"] - 1,
                       "ratios": r, "bookkeeping_s_per_step": book, "bookkeeping_fraction": book / a,
                       "bookkeeping_off_s_per_step": med(off.bookkeeping),
                       "metrics_lines_written": lines, "target": TARGETS["overhead"], "per_round_s_per_step": res}
    log(f"  on {b / a:.2f} img/s   off {b / o:.2f} img/s (medians)   A/B overhead "
        f"{100 * (r['paired_median'] - 1):+.2f}% (paired median; IQR {100 * (r['paired_iqr'][0] - 1):+.1f}% to "
        f"{100 * (r['paired_iqr'][1] - 1):+.1f}%)   target <= {100 * TARGETS['overhead']:.0f}%")
    log(f"  bookkeeping measured directly (epoch wall - timed steps): {1e3 * book:.2f} ms/step = "
        f"{100 * book / a:.3f}% of a step ({lines} metric lines written)")


# -------------------------------------------------------------------- (c), (d)
def make_jpegs(folder: Path, n: int) -> list:
    """``n`` synthetic face JPEGs: half 96x112 aligned crops, half upscaled to 250x250 (LFW's size)."""
    from PIL import Image

    from arcbench.data.synth_face import render_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        data = render_jpeg(1, i % 64, i)
        p = folder / f"id{i % 64:03d}" / f"{i:05d}.jpg"
        p.parent.mkdir(exist_ok=True)
        if i % 2:
            img = Image.open(io.BytesIO(data)).convert("RGB").resize((250, 250), Image.BICUBIC)
            img.save(p, format="JPEG", quality=90)
        else:
            p.write_bytes(data)
        paths.append(str(p))
    return paths


class PlainFaces(torch.utils.data.Dataset):
    """Seed-style preprocessing, written out: RGB, letterbox BICUBIC on grey, [-1, 1], CHW."""

    def __init__(self, paths, size=112):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.open(self.paths[i]).convert("RGB")
        w, h = img.size
        scale = min(self.size / w, self.size / h)
        nw, nh = int(w * scale), int(h * scale)
        canvas = Image.new("RGB", (self.size, self.size), (128, 128, 128))
        canvas.paste(img.resize((nw, nh), Image.BICUBIC), ((self.size - nw) // 2, (self.size - nh) // 2))
        arr = np.array(canvas, np.float32) / 255.0
        arr = (arr - 0.5) / 0.5
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def plain_embed(model, paths, batch, workers):
    loader = torch.utils.data.DataLoader(PlainFaces(paths), batch_size=batch, shuffle=False, num_workers=workers)
    model.eval()
    outs = []
    with torch.no_grad():
        for x in loader:
            outs.append(F.normalize(model(x)))
    return torch.cat(outs).numpy()


def eval_model():
    from arcbench.inference.weights import load_backbone

    weights = REFERENCE / "arcface_mobilefacenet.pth"
    if weights.is_file():
        return load_backbone("mobilefacenet", weights=weights), "reference weights"
    torch.manual_seed(0)
    return load_backbone("mobilefacenet"), "random init (reference weights not found)"


def section_eval(args, out: dict, paths: list) -> None:
    from arcbench import registry
    from arcbench.verification.evaluate import default_workers, embed_set, evaluate
    from arcbench.verification.sets import VerificationSet

    device = registry.require_device("cpu")
    n, batch = len(paths), args.eval_batch
    workers = default_workers(n, batch)
    model, what = eval_model()
    spec = registry.get_backbone("mobilefacenet")
    # as arcbench evaluates this backbone: at its input size, BatchNorms folded where the spec allows
    as_spec = dict(input_size=spec.input_size, fold_bn=spec.fold_bn)
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, n, (600, 2))
    vset = VerificationSet("bench", list(paths), pairs, rng.random(600) < 0.5, np.repeat(np.arange(10), 60))
    log(f"\n(c) evaluation: {n} JPEG files, mobilefacenet ({what}), batch {batch}, {workers} worker(s) both sides")

    def arc():
        t = time.perf_counter()
        evaluate(model, device, vset, batch_size=batch, workers=workers, progress=False, **as_spec)
        return time.perf_counter() - t, n

    def plain():
        t = time.perf_counter()
        plain_embed(model, paths, batch, workers)
        return time.perf_counter() - t, n

    e_arc, _ = embed_set(model, device, vset, batch_size=batch, workers=workers, progress=False, **as_spec)
    e_plain = plain_embed(model, paths, batch, workers)
    diff = float(np.abs(e_arc - e_plain).max())
    cos = float((e_arc * e_plain).sum(1).min())
    res = interleave({"arcbench": arc, "plain": plain}, args.eval_rounds, "(c)")
    a, p = med(res["arcbench"]), med(res["plain"])
    r = ratios(res, "plain", "arcbench")
    out["eval"] = {"arcbench_img_s": 1 / a, "plain_img_s": 1 / p, "ratio": r["paired_median"], "ratios": r,
                   "target": TARGETS["eval"],
                   "images": n, "batch": batch, "workers": workers, "max_abs_embedding_diff": diff,
                   "min_cosine": cos, "model": what, "per_round_s_per_image": res}
    log(f"  arcbench {1 / a:.2f} emb/s   plain {1 / p:.2f} emb/s (medians)   speed-up {fmt_ratio(r)}   "
        f"target >= {TARGETS['eval']:.2f}x")
    log(f"  embeddings agree: max |difference| {diff:.2e}, min cosine {cos:.7f}")


def section_pipeline(args, out: dict, paths: list) -> None:
    from arcbench import registry
    from arcbench.config import RunConfig
    from arcbench.data.train_sets import TrainLoader, TrainSet, default_workers
    from arcbench.train.trainer import Trainer

    labels = [int(Path(p).parent.name[2:]) for p in paths]
    ds = TrainSet("jpegs", 64, paths=paths, labels=labels)
    reps = max(1, 1024 // len(paths))  # the decode-rate loop reads the files several times over
    ds_rate = TrainSet("jpegs", 64, paths=paths * reps, labels=labels * reps)
    batch = 32
    log(f"\n(d) input pipeline: TrainLoader decode + flip, batch {batch}, {len(paths)} JPEGs "
        f"(default workers here: {default_workers()})")
    rates = {}
    for w in args.worker_counts:
        loader = TrainLoader(ds_rate, batch_size=batch, workers=w, seed=0)
        it = iter(loader)
        t0 = time.perf_counter()
        next(it)  # worker start-up + first batch
        first = time.perf_counter() - t0
        t = time.perf_counter()
        count = sum(len(lab) for _, lab in it)
        secs = time.perf_counter() - t
        rates[w] = {"img_s": count / secs if secs else None, "startup_s": first, "images": count}
        log(f"  workers={w}: {count / secs:8.1f} img/s (after a {first:.2f}s first batch)")
        del it, loader
    out["pipeline"] = {"decode_img_s_by_workers": rates, "batch": batch}

    device = registry.require_device("cpu")
    cfg = RunConfig(device="cpu", backbone="mobilefacenet", batch_size=batch, epochs=1, eval_every=0,
                    checkpoint_every=0, quiet=True, record=False, timing_warmup=1, max_steps=args.pipeline_steps,
                    train_data=str(Path(paths[0]).parents[1]))
    loader = TrainLoader(ds, batch_size=batch, seed=0)  # default workers
    trainer = Trainer(cfg, device, loader, recorder=None, log=lambda m: None)
    trainer.run()
    r = trainer.results()
    out["pipeline"].update(train_workers=loader.workers, train_steps=r.get("timed_steps"),
                           data_wait_fraction=r.get("data_wait_fraction"),
                           train_img_s=r.get("throughput_median"), compute_img_s=r.get("compute_ips"))
    log(f"  mobilefacenet training on these JPEGs, {loader.workers} worker(s): "
        f"{r.get('throughput_median', float('nan')):.2f} img/s, data wait {100 * r.get('data_wait_fraction', 0):.2f}% "
        f"of step time over {r.get('timed_steps')} timed steps")


# ----------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and images (about 3-5 minutes here)")
    ap.add_argument("--compile", action="store_true", help="(a) with torch.compile on the arcbench side")
    ap.add_argument("--only", default="a,b,c,d", help="sections to run, e.g. a,c")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args(argv)
    a.steps = 1 if a.quick else 2
    a.rounds = 6 if a.quick else 12
    a.images = 128 if a.quick else 512
    a.eval_batch = 64 if a.quick else 128
    a.eval_rounds = 3 if a.quick else 4
    a.worker_counts = (0, 1, 2)
    a.pipeline_steps = 4 if a.quick else 8
    if a.threads:
        torch.set_num_threads(a.threads)
    only = {s.strip() for s in a.only.split(",") if s.strip()}

    from arcbench.device import cpu_model

    out = {"command": "python benchmarks/compare_reference.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
           "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    log(f"{out['command']}\n torch {out['torch']}, {out['cpu']}, {out['cores']} cores, "
        f"{out['threads']} torch threads, load average {out['loadavg_start']}")
    t0 = time.perf_counter()
    if "a" in only:
        section_train(a, out)
    if "b" in only:
        section_overhead(a, out)
    if only & {"c", "d"}:
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_jpegs(Path(tmp) / "faces", a.images)
            if "c" in only:
                section_eval(a, out, paths)
            if "d" in only:
                section_pipeline(a, out, paths)
    out["seconds"] = time.perf_counter() - t0
    out["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    log("\nsummary (ratios measured side by side in this process; medians over rounds)")
    rows = []
    for key, label in (("train", "(a) train img/s, arcbench / seed"),
                       ("train_compile", "(a) train img/s, arcbench --compile / seed"),
                       ("eval", "(c) eval emb/s, arcbench / plain")):
        if key in out:
            rows.append((label, f"{out[key]['ratio']:.3f}x", f">= {out[key]['target']:.2f}x",
                         "met" if out[key]["ratio"] >= out[key]["target"] else "NOT met"))
    if "overhead" in out:
        o = out["overhead"]
        rows.append(("(b) harness overhead (A/B)", f"{100 * o['overhead']:+.2f}%", "<= 3%",
                     "met" if o["overhead"] <= o["target"] else "NOT met"))
        rows.append(("(b) bookkeeping, measured directly", f"{100 * o['bookkeeping_fraction']:.3f}%", "<= 3%",
                     "met" if o["bookkeeping_fraction"] <= o["target"] else "NOT met"))
    if "pipeline" in out and out["pipeline"].get("data_wait_fraction") is not None:
        rows.append(("(d) data-wait fraction, mobilefacenet CPU", f"{100 * out['pipeline']['data_wait_fraction']:.2f}%",
                     "-", "-"))
    for r in rows:
        log(f"  {r[0]:<44} {r[1]:>9}   target {r[2]:<8} {r[3]}")
    log(f"  ({out['seconds']:.0f}s; load average {out['loadavg_start']} -> {out['loadavg_end']})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=float) + "\n")
        log(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
