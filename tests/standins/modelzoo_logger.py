"""Write logs the way the SDAA model zoo's ArcFace script does, with the real tcap_dllogger.

Run as a script (``python modelzoo_logger.py JSON_PATH SPEC_JSON``) with the library on
``PYTHONPATH`` and stdout + stderr going to one file, as ``python train.py ... 2>&1 | tee
train.log`` does.  It follows the script's ``fit_one_epoch`` (utils/utils_fit_arcface.py):
per training iteration a ``Logger.log(step=[epoch, iteration])`` record with ``total_losss``
(the running mean of the epoch's loss, a device tensor), ``train.lr``, the data / compute /
forward / backward / optimizer times and ``train.ips``; a tqdm bar; validation records with
``total_loss``, ``val_ips`` and ``val_time``; then the prints ``Finish Validation``,
``LFW_Accuracy: a+-b`` and ``Total Loss: x``.  Records are logged at ``Verbosity.DEFAULT`` so
the stdout backend prints them, as in the model zoo's logs.  Nothing here is hand-written
log text: every ``TCAPPDLL`` line comes out of the library.
"""
from __future__ import annotations

import json
import math
import random
import sys


class DeviceScalar:
    """A 0-d device tensor as the script hands it to the logger: the library str()s it, and
    torch prints ``tensor(24.5123, device='sdaa:0')`` (4 decimals).  No SDAA here, so this
    stand-in prints the same text."""

    def __init__(self, value: float, device: str = "sdaa:0"):
        self.value, self.device = float(value), device

    def __str__(self):
        return f"tensor({self.value:.4f}, device='{self.device}')"

    __repr__ = __str__


def main(json_path: str, spec: dict) -> None:
    from tcap_dllogger import JSONStreamBackend, Logger, StdOutBackend, Verbosity
    from tqdm import tqdm

    epochs, iters, val_iters = spec["epochs"], spec["iters"], spec.get("val_iters", 3)
    lfw = spec["lfw"]  # [(mean, std)] per epoch
    rng = random.Random(spec.get("seed", 0))
    batch = spec.get("batch", 96)
    logger = Logger([StdOutBackend(Verbosity.DEFAULT), JSONStreamBackend(Verbosity.VERBOSE, json_path)])
    for name, unit in (("total_losss", ""), ("train.lr", ""), ("train.data_time", "s"),
                       ("train.compute_time", "s"), ("train.fp_time", "s"), ("train.bp_time", "s"),
                       ("train.grad_time", "s"), ("train.ips", "images/s"), ("val_ips", "images/s"),
                       ("val_time", "s")):
        logger.metadata(name, {"unit": unit})
    step = 0
    for epoch in range(epochs):
        print("Start Train", flush=True)
        pbar = tqdm(total=iters, desc=f"Epoch {epoch + 1}/{epochs}", postfix=dict, mininterval=0)
        total = 0.0
        lr = spec.get("lr", 0.015) * (0.5 ** epoch)
        for iteration in range(iters):
            loss = 2.0 + 20.0 * math.exp(-0.05 * step) + rng.uniform(-0.3, 0.3)
            step += 1
            total += loss
            fp, bp, grad = rng.uniform(0.05, 0.06), rng.uniform(0.1, 0.12), rng.uniform(0.01, 0.02)
            data_time = rng.uniform(0.001, 0.01)
            compute = fp + bp + grad
            logger.log(step=[epoch, iteration], data={
                "total_losss": DeviceScalar(total / (iteration + 1)), "train.lr": lr,
                "train.data_time": data_time, "train.compute_time": compute, "train.fp_time": fp,
                "train.bp_time": bp, "train.grad_time": grad, "train.ips": batch / (data_time + compute)},
                verbosity=Verbosity.DEFAULT)
            pbar.set_postfix(**{"total_loss": total / (iteration + 1), "accuracy": 0.5, "lr": lr})
            pbar.update(1)
        pbar.close()
        print("Finish Train", flush=True)
        print("Start Validation", flush=True)
        pbar = tqdm(total=val_iters, desc=f"Epoch {epoch + 1}/{epochs}", postfix=dict, mininterval=0)
        val_total = 0.0
        for iteration in range(val_iters):
            val_total += total / iters + rng.uniform(0.0, 0.5)
            logger.log(step=[epoch, iteration], data={
                "total_loss": DeviceScalar(val_total / (iteration + 1)), "val_ips": rng.uniform(800, 900),
                "val_time": rng.uniform(0.1, 0.2)}, verbosity=Verbosity.DEFAULT)
            pbar.update(1)
        pbar.close()
        print("Finish Validation", flush=True)
        print("LFW_Accuracy: %2.5f+-%2.5f" % tuple(lfw[epoch]), flush=True)
        print("Total Loss: %.4f" % (total / iters), flush=True)
    logger.flush()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
