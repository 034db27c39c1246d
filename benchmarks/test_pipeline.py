"""Host-side benchmarks: JPEG decode + preprocessing, verification metrics, checkpoint load,
and (accelerators only) the host-to-device copy of a batch."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch


def _jpeg(img, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    """A generated 250x250 face JPEG (LFW's original size: exercises the letterbox resize)."""
    from PIL import Image

    from arcbench.data.synth_face import render_jpeg

    face = Image.open(io.BytesIO(render_jpeg(0, 7, 0))).convert("RGB")
    path = tmp_path_factory.mktemp("jpeg") / "face250.jpg"
    path.write_bytes(_jpeg(face.resize((250, 250), Image.BICUBIC)))
    return path


@pytest.mark.benchmark(group="decode")
@pytest.mark.parametrize("which", ["reference-96x112", "generated-250x250"])
def test_decode_preprocess(timed, which, request, short):
    """File -> RGB -> letterbox (BICUBIC on grey) -> [-1, 1] CHW tensor: arcbench.data.preprocess.load_tensor."""
    from arcbench.data.preprocess import load_tensor

    if which.startswith("reference"):
        ref = request.getfixturevalue("reference_dir")
        files = sorted((ref / "faces").glob("*.jpg"))
    else:
        files = [request.getfixturevalue("big_jpeg")]
    files = [str(f) for f in files] * (1 if short else 8)

    def decode():
        return [load_tensor(f) for f in files]

    out = timed(decode, images=len(files), source=which)
    assert out[0].shape == (3, 112, 112) and out[0].dtype == torch.float32


@pytest.mark.benchmark(group="decode")
def test_decode_train_sample(timed, tmp_path, short):
    """One TrainSet sample (decode + preprocess + random flip), as a DataLoader worker runs it."""
    from arcbench.data.synth_face import render_jpeg
    from arcbench.data.train_sets import TrainSet

    n = 8 if short else 64
    paths = []
    for k in range(n):
        p = tmp_path / f"{k}.jpg"
        p.write_bytes(render_jpeg(0, k % 4, k))
        paths.append(str(p))
    ds = TrainSet("bench", 4, paths=paths, labels=[k % 4 for k in range(n)])

    def samples():
        return [ds[i] for i in range(n)]

    out = timed(samples, images=n)
    assert all(bad == "" for _, _, bad in out)


def _lfw_like(n_pairs: int = 6000, seed: int = 0):
    rng = np.random.default_rng(seed)
    issame = np.tile(np.repeat([True, False], 300), n_pairs // 600)
    dist = np.where(issame, rng.normal(0.9, 0.2, n_pairs), rng.normal(1.35, 0.15, n_pairs)).clip(0, 2)
    folds = np.repeat(np.arange(10), n_pairs // 10)
    return dist, issame, folds


@pytest.mark.benchmark(group="metrics")
@pytest.mark.parametrize("thresholds", ["grid", "exact"])
def test_verification_metrics_6000_pairs(timed, thresholds, short):
    """10-fold accuracy, VAL@FAR, ROC/AUC/EER over LFW's 6000 pairs (arcbench.verification.protocol)."""
    from arcbench.verification.protocol import verification_metrics

    if short and thresholds == "exact":
        pytest.skip("exact thresholds: full mode only")
    d, y, f = _lfw_like()
    res = timed(lambda: verification_metrics(d, y, folds=f, thresholds=thresholds), rates={"pairs": len(d)},
                pairs=len(d), thresholds=thresholds)
    assert 0.5 < res["accuracy"] <= 1.0


@pytest.mark.benchmark(group="checkpoint")
def test_checkpoint_load_reference(timed, reference_dir):
    """The reference arcface_mobilefacenet.pth: weights_only load, prefix strip, strict load."""
    from arcbench.inference.weights import load_backbone

    path = reference_dir / "arcface_mobilefacenet.pth"
    size = path.stat().st_size
    model = timed(lambda: load_backbone("mobilefacenet", weights=path), rates={"MiB": size / 2**20}, bytes=size)
    assert sum(p.numel() for p in model.parameters()) > 900_000


@pytest.mark.benchmark(group="h2d")
@pytest.mark.parametrize("pinned", [True, False])
def test_host_to_device_batch(timed, accelerator, short, pinned):
    """Copy a float32 batch of 112x112 images to the device (what the loader hands the step)."""
    batch = 64 if short else 512
    x = torch.rand(batch, 3, 112, 112)
    if pinned:
        x = x.pin_memory(accelerator.torch_device().type) if accelerator.torch_device().type != "cuda" \
            else x.pin_memory()
    tdev = accelerator.torch_device()
    timed(lambda: x.to(tdev, non_blocking=True), accelerator, images=batch, pinned=pinned,
          mib=round(x.numel() * 4 / 2**20, 1))
