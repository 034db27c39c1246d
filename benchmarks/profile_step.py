#!/usr/bin/env python
"""Where a step's time goes: torch.profiler over a few steps, grouped by kind of operator.

    python benchmarks/profile_step.py [--backbone mobilefacenet] [--batch 32] [--steps 2]
                                      [--what seed,train,eval,eval-folded] [--threads N] [--table]

``train``: arcbench's Trainer.train_step (channels_last, foreach SGD);
``seed``: the seed-style step (contiguous, for-loop SGD, log_softmax + NLL, .item());
``eval``: plain fp32 forward under no_grad; ``eval-folded``: the model arcbench.verification.evaluate
runs (conv+BN folded copy, channels_last, inference_mode).  CPU only.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

GROUPS = (  # first match wins; matched against the aten op name
    ("conv backward", ("convolution_backward",)),
    ("conv forward", ("mkldnn_convolution", "_convolution", "conv2d", "onednn")),
    ("batchnorm backward", ("batch_norm_backward",)),
    ("batchnorm forward", ("native_batch_norm", "_batch_norm_impl_index", "batch_norm")),
    ("prelu backward", ("_prelu_kernel_backward",)),
    ("prelu forward", ("_prelu_kernel",)),
    ("reductions (prelu weight grad, loss)", ("aten::sum", "aten::mean")),
    ("matmul (head)", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer / elementwise", ("aten::add_", "aten::mul_", "aten::addcmul_", "aten::lerp_", "_foreach_",
                                 "aten::add", "aten::mul", "aten::div", "aten::sub", "aten::neg")),
)


def group_of(name: str) -> str:
    for label, keys in GROUPS:
        if any(k in name for k in keys):
            return label
    return "other"


def make(what: str, backbone: str, batch: int):
    from arcbench import registry
    from arcbench.config import RunConfig
    from arcbench.data.synthetic_batches import SyntheticBatches
    from arcbench.inference.weights import inference_model
    from arcbench.train.model import build_face_model
    from arcbench.train.trainer import Trainer

    torch.manual_seed(0)
    spec = registry.get_backbone(backbone)
    x = torch.rand(batch, 3, spec.input_size, spec.input_size) * 2 - 1
    y = torch.randint(0, 1000, (batch,))
    if what == "train":
        dev = registry.require_device("cpu")
        cfg = RunConfig(device="cpu", backbone=backbone, batch_size=batch, train_data="synthetic",
                        synthetic_classes=1000, synthetic_steps=1, epochs=1, quiet=True, record=False)
        tr = Trainer(cfg, dev, SyntheticBatches(batch, 1000, 1), recorder=None, log=lambda *a: None)
        tr.face.train()
        xc = x.contiguous(memory_format=torch.channels_last)
        return lambda: tr.train_step(xc, y)
    if what == "seed":
        model = build_face_model(RunConfig(backbone=backbone), 1000).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

        def step():
            out = model(x, y)
            loss = F.nll_loss(F.log_softmax(out, -1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        return step
    model = spec.create().eval()
    if what == "eval":
        def fwd():
            with torch.no_grad():
                model(x)
        return fwd
    fast = inference_model(model, channels_last=True, fold_bn=spec.fold_bn)
    xc = x.contiguous(memory_format=torch.channels_last)

    def fwd_fast():
        with torch.inference_mode():
            fast(xc)
    return fwd_fast


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="mobilefacenet")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--what", default="seed,train,eval,eval-folded")
    ap.add_argument("--table", action="store_true", help="also print torch's per-operator table")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.backbone} batch {a.batch}, "
          f"{a.steps} profiled steps after one warm-up")
    for what in [w.strip() for w in a.what.split(",") if w.strip()]:
        fn = make(what, a.backbone, a.batch)
        fn()
        t = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(a.steps):
                fn()
        wall = (time.perf_counter() - t) / a.steps
        groups = defaultdict(float)
        total = 0.0
        for ev in prof.key_averages():
            groups[group_of(ev.key)] += ev.self_cpu_time_total
            total += ev.self_cpu_time_total
        print(f"\n{what}: {wall:.3f} s/step wall ({a.batch / wall:.1f} img/s, profiled), "
              f"self CPU time by kind of operator:")
        for label, us in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"  {label:<40} {100 * us / total:5.1f}%   {us / 1e6 / a.steps:7.3f} s/step")
        if a.table:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
