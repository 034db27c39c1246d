"""Compute benchmarks: backbone forward, a training step, margin heads.

Batch sizes are (short mode, full mode); the short mode is what CI runs on two
CPU cores.  Figures are reported, never asserted.
"""
from __future__ import annotations

import pytest
import torch

# backbone -> (short batch, full batch); None = full mode only
FORWARD = {
    "mobilefacenet": (4, 16),
    "mobilenetv1": (4, 16),
    "iresnet18": (2, 4),
    "iresnet34": (None, 2),
    "iresnet50": (None, 2),
    "iresnet100": (None, 1),
    "iresnet200": (None, 1),
}
TRAIN = {"mobilefacenet": (4, 8), "iresnet50": (2, 2)}   # BatchNorm1d needs batch >= 2
HEADS = ("arcface", "cosface", "combined")


def _batch(short: bool, sizes, what: str) -> int:
    b = sizes[0] if short else sizes[1]
    if b is None:
        pytest.skip(f"{what}: full mode only (too slow for --arcbench-short)")
    return b


def _images(batch: int, size: int, tdev, channels_last: bool) -> torch.Tensor:
    """``batch`` images of side ``size`` (the backbone spec's input_size)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(tdev)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.benchmark(group="forward")
@pytest.mark.parametrize("backbone", list(FORWARD))
def test_forward(timed, device, tdev, short, backbone):
    """Embedding forward (eval mode, inference_mode, channels_last as arcbench evaluates)."""
    from arcbench.registry import get_backbone

    batch = _batch(short, FORWARD[backbone], backbone)
    spec = get_backbone(backbone)
    model = spec.create().to(tdev).eval().to(memory_format=torch.channels_last)
    x = _images(batch, spec.input_size, tdev, True)

    def fwd():
        with torch.inference_mode():
            return model(x)

    out = timed(fwd, device, images=batch, backbone=backbone, batch=batch)
    assert out.shape[0] == batch


@pytest.mark.benchmark(group="forward-eval")
@pytest.mark.parametrize("backbone", ["mobilefacenet", "iresnet18"])
def test_embed_model(timed, device, tdev, short, backbone):
    """The model arcbench.verification.evaluate actually runs (conv+BN folded copy, channels_last)."""
    from arcbench.inference.weights import inference_model
    from arcbench.registry import get_backbone

    batch = _batch(short, FORWARD[backbone], backbone)
    spec = get_backbone(backbone)
    model = spec.create().to(tdev).eval()
    fast = inference_model(model, channels_last=True, fold_bn=spec.fold_bn)
    x = _images(batch, spec.input_size, tdev, True)

    def fwd():
        with torch.inference_mode():
            return fast(x)

    timed(fwd, device, images=batch, backbone=backbone, batch=batch, folded=fast is not model)


def _trainer(device, backbone: str, batch: int, precision: str = "fp32"):
    from arcbench.config import RunConfig
    from arcbench.data.synthetic_batches import SyntheticBatches
    from arcbench.train.trainer import Trainer

    cfg = RunConfig(device=device.name, backbone=backbone, batch_size=batch, precision=precision,
                    train_data="synthetic", synthetic_classes=1000, synthetic_steps=1, epochs=1,
                    eval_every=0, checkpoint_every=0, quiet=True, record=False)
    data = SyntheticBatches(batch, num_classes=1000, steps_per_epoch=1, device=device.torch_device())
    return Trainer(cfg, device, data, recorder=None, log=lambda *a: None), data


@pytest.mark.benchmark(group="train-step")
@pytest.mark.parametrize("precision", ["fp32", "amp"])
@pytest.mark.parametrize("backbone", list(TRAIN))
def test_train_step(timed, device, short, backbone, precision):
    """Forward + backward + optimizer step through Trainer.train_step (the training loop's body)."""
    if precision == "amp" and device.torch_device().type == "cpu":
        pytest.skip("AMP step: accelerator only here (CPU bf16 is measured by `arcbench bench --precision fp32,amp`)")
    batch = _batch(short, TRAIN[backbone], backbone)
    trainer, data = _trainer(device, backbone, batch, precision)
    trainer.face.train()
    cl = torch.channels_last if trainer.cfg.optim.channels_last else torch.contiguous_format
    x = data.images.contiguous(memory_format=cl)
    y = data.labels
    loss = timed(lambda: trainer.train_step(x, y), device, images=batch, backbone=backbone, batch=batch,
                 precision=precision, channels_last=trainer.cfg.optim.channels_last)
    assert torch.isfinite(loss).item()


@pytest.mark.benchmark(group="head")
@pytest.mark.parametrize("head", HEADS)
def test_head_fwd_bwd(timed, device, tdev, short, head):
    """Margin head forward + backward (embeddings -> scaled logits -> cross entropy -> grads)."""
    import torch.nn.functional as F

    from arcbench.registry import create_head

    batch, dim, classes = (16, 128, 1000) if short else (64, 512, 5000)
    h = create_head(head, dim, classes, s=64.0).to(tdev)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(batch, dim, generator=g).to(tdev).requires_grad_()
    labels = torch.randint(0, classes, (batch,), generator=g).to(tdev)

    def step():
        h.zero_grad(set_to_none=True)
        emb.grad = None
        loss = F.cross_entropy(h(emb, labels), labels)
        loss.backward()
        return loss

    timed(step, device, images=batch, head=head, batch=batch, dim=dim, classes=classes)
