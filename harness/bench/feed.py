"""``arcbench bench --mode data``: can this host feed this card?

A data point runs only the input pipeline a training point would run (read,
decode, letterbox, flip, collate, pin, copy to the device, normalise there)
for the same data set, batch size and worker count, with the device
synchronised around every batch.  It reports img/s (images over the wall time
of the timed batches: workers deliver in bursts, so a per-batch median would
misread), img/s per worker, and the ratio to a bare PIL decode loop over the
same files measured in the same process: how close the pipeline gets to the
decoder's own limit.

When a grid has data and train rows for the same batch, :func:`feed_ratios`
gives both a ``feed_ratio`` = data img/s / train img/s; below 1.0 the input
pipeline, not the card, sets the training speed.
"""
from __future__ import annotations

import io
import time
from typing import Iterator, List, Optional

#: below this the input pipeline cannot keep the card busy
FEED_OK = 1.0
#: files the bare decode loop reads (fewer when the set is smaller)
DECODE_SAMPLE = 512


def epochs(data) -> Iterator:
    """The loader's batches epoch after epoch (real decoding every time, never a cache)."""
    epoch = 0
    while True:
        data.set_epoch(epoch)
        got = False
        for batch in data:
            got = True
            yield batch
        if not got:
            return
        epoch += 1


def data_point(cfg, warmup: int, steps: int, device) -> dict:
    """Time ``warmup + steps`` batches through the pipeline on ``device``; figures of the timed ones."""
    from ..data.device_feed import DeviceFeed
    from ..run.run_data import open_train_data
    from ..errors import ArcbenchError
    from ..record.stats import peak_memory
    from ..registry import get_backbone
    from ..record.timed_steps import time_steps

    if cfg.data.train_data == "synthetic":
        raise ArcbenchError("--mode data measures the input pipeline: give --data a training set, not synthetic")
    spec = get_backbone(cfg.model.backbone)
    data = open_train_data(cfg, device, 0, 1, input_size=spec.input_size)
    decode = bare_decode_rate(data.dataset)  # before the workers start: nothing competes with it
    feed = DeviceFeed(epochs(data), device, channels_last=cfg.optim.channels_last)
    device.reset_peak_memory()
    timed = time_steps(device, feed, warmup, steps, on_empty=lambda: ArcbenchError(
        "the training set gave no usable batch (every image bad?)", cfg.data.train_data))
    times = timed.data
    batch = cfg.per_process_batch
    out = timed.figures(batch, host_wait=False)
    total = sum(times)
    rate = batch * len(times) / total if total > 0 else None
    workers = int(getattr(data, "workers", 0) or 0)
    out.update(throughput_median=rate, throughput_mean=rate, compute_ips=None, data_wait_fraction=None,
               workers=workers, throughput_per_worker=rate / max(1, workers) if rate else None,
               decode_img_s=decode,
               decode_ratio=(rate / (max(1, workers) * decode)) if (rate and decode) else None,
               bad_images=int(getattr(data, "bad_images", 0)), steps=warmup + steps, status="completed",
               train_set=data.name, synthetic=False, decode=cfg.data.decode)
    out.update(peak_memory(device))
    return out


def bare_decode_rate(dataset, limit: int = DECODE_SAMPLE) -> Optional[float]:
    """img/s of a plain PIL decode-to-RGB loop over (up to ``limit`` of) the set's files, in this
    process on one core: the decoder's own limit, which a worker cannot beat."""
    from PIL import Image

    n = min(limit, len(dataset))
    if n == 0:
        return None
    reader = getattr(dataset, "reader", None)
    if reader is not None:
        blobs = [reader.read(reader.keys[i])[1] for i in range(n)]
        sources = [io.BytesIO(b) for b in blobs]
    else:
        sources = list(dataset.paths[:n])

    def one_pass() -> tuple:
        done, start = 0, time.perf_counter()
        for src in sources:
            if reader is not None:
                src.seek(0)
            try:
                with Image.open(src) as img:
                    img.convert("RGB").load()
            except Exception:  # bad images are the pipeline's business; the bare loop only decodes
                continue
            done += 1
        return done, time.perf_counter() - start

    one_pass()  # the page cache warm, as it is for the pipeline's later epochs
    done, took = one_pass()
    return done / took if done and took > 0 else None


def _pair_key(r: dict) -> tuple:
    return r.get("backbone"), r.get("per_process_batch"), r.get("data")


def feed_ratios(rows: List[dict]) -> None:
    """Set ``feed_ratio`` on data rows and on the train rows (one process) with the same batch.

    A train row's ratio is data img/s / its img/s; a data row's is against the fastest such
    train row (the strictest demand the grid measured)."""
    data = {_pair_key(r): r for r in rows if r.get("mode") == "data" and r.get("throughput_median")}
    trains = {}
    for r in rows:
        r.setdefault("feed_ratio", None)
        if r.get("mode") == "train" and r.get("nproc") == 1 and r.get("throughput_median"):
            trains.setdefault(_pair_key(r), []).append(r)
    for key, d in data.items():
        for t in trains.get(key, []):
            t["feed_ratio"] = d["throughput_median"] / t["throughput_median"]
        if trains.get(key):
            d["feed_ratio"] = d["throughput_median"] / max(t["throughput_median"] for t in trains[key])


def feed_words(rows: List[dict]) -> List[str]:
    """One line per data row whose pipeline cannot keep up with the training it was paired with."""
    lines = []
    for r in rows:
        ratio = r.get("feed_ratio")
        if r.get("mode") == "data" and ratio is not None and ratio < FEED_OK:
            lines.append(f"input pipeline is the bottleneck at batch {r.get('per_process_batch')}: it delivers "
                         f"{r['throughput_median']:.0f} img/s with {r.get('workers')} worker(s), "
                         f"{ratio:.2f}x what training consumes; add workers (--workers) or cores, or use "
                         f"a faster decoder")
    return lines
