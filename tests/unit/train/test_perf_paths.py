"""The speed paths keep results: BN-folded eval copy, reference-exact decode, FLOPs convention,
and Trainer.train_step (the body the benchmarks time)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from arcbench.inference.weights import inference_model
from arcbench.registry import create_backbone, get_backbone
from arcbench.data.preprocess import load_tensor, open_image


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18"])
def test_folded_copy_gives_the_same_embeddings_and_leaves_the_model_alone(name):
    torch.manual_seed(0)
    model = create_backbone(name)
    _randomise_bn(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_model(model, channels_last=True, fold_bn=get_backbone(name).fold_bn)
    assert fast is not model and not fast.training
    def bns(m):
        return sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    # every conv->BN pair folds; iresnet's pre-activation BNs (BN before a conv) stay
    assert bns(fast) == 0 if name == "mobilefacenet" else 0 < bns(fast) < bns(model)
    assert model.training and all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    model.eval()
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model(x).flatten(1))
        got = torch.nn.functional.normalize(fast(x.contiguous(memory_format=torch.channels_last)).flatten(1))
    assert (ref - got).abs().max().item() < 1e-4


def test_third_party_models_are_not_folded_unless_asked():
    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)).mean((2, 3))

    m = Counting()
    assert inference_model(m) is m
    folded = inference_model(m, fold_bn=True)
    assert folded is not m and not any(isinstance(x, torch.nn.BatchNorm2d) for x in folded.modules())


def _reference_preprocess(data: bytes, size: int = 112) -> np.ndarray:
    """The reference's steps written out: RGB, letterbox BICUBIC on grey 128, [-1, 1], CHW."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = min(size / w, size / h)
    nw, nh = int(w * scale), int(h * scale)
    canvas = Image.new("RGB", (size, size), (128, 128, 128))
    canvas.paste(img.resize((nw, nh), Image.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
    arr = (np.array(canvas, np.float32) / 255.0 - 0.5) / 0.5
    return arr.transpose(2, 0, 1)


@pytest.mark.parametrize("shape", [(96, 112), (250, 250), (640, 480)])
def test_decode_is_bit_identical_to_the_reference(shape):
    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, (28, 24, 3), dtype=np.uint8)).resize(shape, Image.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    got = load_tensor(data).numpy()
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, _reference_preprocess(data))
    if shape != (96, 112):  # draft decoding is faster but not the reference's pixels: opt-in only
        assert open_image(data, draft=True).size != open_image(data).size


def test_train_flops_are_three_forwards():
    from arcbench.bench.grid import TRAIN_FLOPS_FACTOR, step_flops

    fwd = step_flops("mobilefacenet", "arcface", 1, "eval")
    train = step_flops("mobilefacenet", "arcface", 1, "train")
    assert 0.40e9 <= fwd <= 0.50e9                     # 0.22 GMACs
    head = 2 * 128 * 1000                              # the 1000-class ArcFace matmul
    assert train == pytest.approx(TRAIN_FLOPS_FACTOR * (fwd + head), rel=1e-3)
    assert step_flops("mobilefacenet", "arcface", 64, "train") == pytest.approx(64 * train, rel=1e-6)


def test_train_step_is_one_optimisation_step():
    from arcbench import registry
    from arcbench.config import RunConfig
    from arcbench.data.synthetic_batches import SyntheticBatches
    from arcbench.train.trainer import Trainer

    dev = registry.require_device("cpu")
    cfg = RunConfig(device="cpu", backbone="mobilefacenet", batch_size=4, train_data="synthetic",
                    synthetic_classes=10, synthetic_steps=1, epochs=1, quiet=True, record=False)
    data = SyntheticBatches(4, num_classes=10, steps_per_epoch=1)
    tr = Trainer(cfg, dev, data, recorder=None, log=lambda *a: None)
    w0 = tr.face.head.weight.detach().clone()
    loss = tr.train_step(data.images.contiguous(memory_format=torch.channels_last), data.labels)
    assert loss.dim() == 0 and not loss.requires_grad and torch.isfinite(loss)
    assert not torch.equal(w0, tr.face.head.weight)


def test_warm_up_is_excluded_per_process_start_not_per_global_step():
    """A resumed run starts cold again: its first steps are warm-up even at global step 100."""
    from arcbench import plugin_manager, registry
    from arcbench.config import RunConfig
    from arcbench.data.synthetic_batches import SyntheticBatches
    from arcbench.train.trainer import Trainer

    plugin_manager.load_plugin_module("tinyplugin")
    try:
        dev = registry.require_device("cpu")
        cfg = RunConfig(device="cpu", backbone="tiny", batch_size=4, train_data="synthetic", synthetic_classes=10,
                        synthetic_steps=6, epochs=100, quiet=True, record=False, timing_warmup=2)
        tr = Trainer(cfg, dev, SyntheticBatches(4, num_classes=10, steps_per_epoch=6), recorder=None,
                     log=lambda *a: None)
        tr.progress.load_state_dict({"epoch": 50, "step_in_epoch": 0, "global_step": 300})  # as if restored
        tr.train_epoch()
        assert tr.progress.global_step == 306 and len(tr.metrics.times.compute) == len(tr.metrics.times.data) == 4
        tr.train_epoch()
        assert len(tr.metrics.times.compute) == 10  # warm-up only once per process
    finally:
        plugin_manager.unregister_plugin("tinyplugin")


def test_launcher_blames_the_root_cause_not_a_tccl_echo():
    """A rank that only saw its tccl peer vanish is secondary; the rank with its own error comes first."""
    from types import SimpleNamespace

    from arcbench.run.launcher import _failure_reason

    exc = SimpleNamespace(failures={
        0: SimpleNamespace(exitcode=1, timestamp=1, message="RuntimeError: tccl: remote process exited"),
        1: SimpleNamespace(exitcode=1, timestamp=2, message="ArcbenchError: images/x.jpg: not an image"),
    })
    assert _failure_reason(exc).startswith("worker rank 1 exit code 1: ArcbenchError: images/x.jpg")


def test_a_rank_with_only_warm_up_steps_gives_no_throughput_not_zero(monkeypatch):
    """Summed over ranks, a figure some rank lacks is unknown: reported as None, never as 0.0 img/s."""
    import torch

    from arcbench.run import collectives
    from arcbench.run.worker import _global_figures

    def gather(name, t):  # rank 0 as given; rank 1 timed 30 img/s
        other = t.clone()
        other[0:3] = torch.tensor([30.0, 31.0, 40.0], dtype=t.dtype)
        other[3] = 1
        return [t, other]

    monkeypatch.setattr(collectives, "all_gather", gather)
    warm_only = _global_figures({"samples": 32, "card": 0}, 2)
    assert warm_only["throughput_median"] is None and warm_only["throughput_per_rank"] == [None, 30.0]
    timed = _global_figures({"samples": 32, "card": 0, "throughput_median": 20.0, "throughput_mean": 21.0,
                             "compute_ips": 25.0}, 2)
    assert (timed["throughput_median"], timed["compute_ips"]) == (50.0, 65.0)
    assert timed["card_per_rank"] == [0, 1] and timed["samples"] == 64
