"""uint8 training batches normalised on the device are the reference's pixels, bit for bit.

Workers hand over HWC uint8; :func:`arcbench.data.preprocess.normalise` scales it on the
device by gathering from a 256-entry table made with ``to_array``'s own float32 numpy
arithmetic.  These tests hold it to ``torch.equal`` against ``to_array`` on every byte
value and on the real reference photos, and check that the real checkpoint's
distances do not move.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from arcbench.inference.weights import load_backbone
from arcbench.data.device_feed import DeviceFeed
from arcbench.data.train_sets import TrainSet, make_loader
from arcbench.verification.evaluate import embed_batch
from arcbench.data.preprocess import load_tensor, load_uint8, normalise, normalise_table, to_array, to_uint8
from arcbench.registry import get_device

FACES = ("1_001.jpg", "1_002.jpg", "2_001.jpg")


def _all_bytes_image() -> Image.Image:
    """Every byte value in every channel: 3 rows x 256 columns, channels shifted against each other."""
    v = np.arange(256, dtype=np.uint8)
    rows = [np.stack([np.roll(v, k), np.roll(v, k + 85), np.roll(v, k + 170)], axis=-1) for k in range(3)]
    return Image.fromarray(np.stack(rows))


def test_table_normalisation_equals_to_array_on_all_256_byte_values():
    img = _all_bytes_image()
    want = torch.from_numpy(to_array(img))[None]
    got = normalise(torch.from_numpy(to_uint8(img))[None], normalise_table())
    assert got.dtype == torch.float32 and got.shape == want.shape == (1, 3, 3, 256)
    assert torch.equal(got, want)
    assert torch.equal(normalise(torch.from_numpy(to_uint8(img))[None], normalise_table(), channels_last=False),
                       want)
    # the table holds exactly the values the reference expression gives each byte
    table = normalise_table()
    assert table.dtype == torch.float32 and table.shape == (256,)
    assert table[0].item() == -1.0 and table[255].item() == 1.0


def test_channels_last_comes_from_a_permute_without_a_copy():
    batch = torch.randint(0, 256, (4, 7, 5, 3), dtype=torch.uint8)
    out = normalise(batch, normalise_table())
    assert out.shape == (4, 3, 7, 5)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert out.untyped_storage().nbytes() == out.numel() * 4  # one buffer: the gather's own
    flat = normalise(batch, normalise_table(), channels_last=False)
    assert flat.is_contiguous() and torch.equal(flat, out)


@pytest.mark.parametrize("flip", [False, True])
def test_reference_photos_are_bit_identical_through_the_table(reference_dir, flip):
    faces = reference_dir / "faces"
    for name in FACES:
        want = load_tensor(faces / name, flip=flip)
        raw = load_uint8(faces / name, flip=flip)
        assert raw.dtype == torch.uint8 and raw.shape == (112, 112, 3)
        assert raw.numel() * raw.element_size() * 4 == want.numel() * want.element_size()
        assert torch.equal(normalise(raw[None], normalise_table())[0], want), name


def test_real_checkpoint_distances_are_unchanged_on_the_reference_photos(reference_dir):
    model = load_backbone("mobilefacenet", reference_dir / "arcface_mobilefacenet.pth").eval()
    faces = reference_dir / "faces"
    before = torch.stack([load_tensor(faces / f) for f in FACES])
    feed = DeviceFeed([(torch.stack([load_uint8(faces / f) for f in FACES]), torch.arange(3))],
                      get_device("cpu"), channels_last=False)
    after, _ = next(feed)
    assert torch.equal(after, before)
    e0, e1 = embed_batch(model, before), embed_batch(model, after)
    d0 = [float(torch.dist(e0[i], e0[j])) for i, j in ((0, 1), (0, 2), (1, 2))]
    d1 = [float(torch.dist(e1[i], e1[j])) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert d1 == d0
    # the channels_last view the training loop gets: same pixels, same distances to 5 decimals
    cl, _ = next(DeviceFeed([(torch.stack([load_uint8(faces / f) for f in FACES]), torch.arange(3))],
                            get_device("cpu")))
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, before)
    e2 = embed_batch(model, cl)
    assert [float(torch.dist(e2[i], e2[j])) for i, j in ((0, 1), (0, 2), (1, 2))] == pytest.approx(d0, abs=1e-5)


def test_loader_batches_are_uint8_in_shared_memory(reference_dir):
    faces = reference_dir / "faces"
    paths = [str(faces / f) for f in FACES] * 4
    ds = TrainSet("faces", 2, paths=paths, labels=[0, 0, 1] * 4, augment=False)
    loader = make_loader(ds, batch_size=4, workers=1, seed=0)
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (4, 112, 112, 3)
    assert images.is_shared()  # collated into shared memory by the worker: no second copy
    for img, lab in zip(images, labels):
        i = [k for k, p in enumerate(paths) if int(ds.labels[k]) == int(lab)]
        assert any(torch.equal(normalise(img[None], normalise_table())[0], load_tensor(paths[k])) for k in i)
