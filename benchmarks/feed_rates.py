"""Input-pipeline figures on one image folder, all in one process (docs/PERFORMANCE.md).

    python benchmarks/feed_rates.py FOLDER [--batch 64] [--workers 1,2] [--epochs 3]

Prints JSON: a bare PIL decode loop over the folder's files (open, RGB, load: the
decoder's own limit on one core), TrainSet samples/s on one core (decode,
letterbox, flip, hand-over format), and the data-only pipeline (loader workers,
collate, pin, copy to the CPU "device", normalise) at each worker count, each with
its ratio to the bare decode loop.  Medians over passes; the first loader epoch
(worker start-up) is excluded.  On a tree from before uint8 samples (no
``arcbench.data.preprocess.normalise``) the loop copies the float batch as that
training loop did, so the same script gives the before figures.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time

import torch
from PIL import Image

from arcbench.data import preprocess
from arcbench.data.train_sets import make_loader, open_train_set


def bare_decode(files) -> float:
    start = time.perf_counter()
    for f in files:
        with Image.open(f) as img:
            img.convert("RGB").load()
    return len(files) / (time.perf_counter() - start)


def trainset_rate(ds) -> float:
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[(0, i)]
    return len(ds) / (time.perf_counter() - start)


def loader_rate(ds, batch: int, workers: int, epochs: int) -> float:
    loader = make_loader(ds, batch_size=batch, workers=workers, seed=0)
    if hasattr(preprocess, "normalise"):
        from arcbench.data.device_feed import DeviceFeed
        from arcbench.registry import get_device

        feed = lambda it: DeviceFeed(it, get_device("cpu"))  # noqa: E731
    else:  # before uint8 samples: the training loop's copy of a float batch
        feed = lambda it: ((x.to("cpu", non_blocking=True, memory_format=torch.channels_last), y)  # noqa: E731
                           for x, y in it)
    rates = []
    for epoch in range(epochs + 1):
        loader.set_epoch(epoch)
        start, n = time.perf_counter(), 0
        for images, _ in feed(iter(loader)):
            n += images.shape[0]
        if epoch:  # epoch 0 starts the workers
            rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(glob.glob(os.path.join(args.folder, "*", "*.jpg")))
    ds = open_train_set(args.folder)
    bare_decode(files)  # page cache warm
    pil = statistics.median(bare_decode(files) for _ in range(3))
    per_core = statistics.median(trainset_rate(ds) for _ in range(3))
    sample = ds[(0, 0)][0]
    out = {"files": len(files), "bare_pil_decode_img_s": round(pil),
           "trainset_samples_s_per_core": round(per_core), "trainset_vs_bare": round(per_core / pil, 3),
           "sample": f"{tuple(sample.shape)} {sample.dtype}, {sample.numel() * sample.element_size()} bytes"}
    for w in (int(v) for v in args.workers.split(",")):
        rate = loader_rate(ds, args.batch, w, args.epochs)
        out[f"pipeline_{w}w_img_s"] = round(rate)
        out[f"pipeline_{w}w_vs_bare"] = round(rate / pil, 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
