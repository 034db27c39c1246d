"""The training data layer: open_train_set, TrainLoader, SyntheticBatches."""
from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from arcbench.data import synth
from arcbench.data.synthetic_batches import SyntheticBatches
from arcbench.data.train_sets import TrainSet, make_loader, open_train_set
from arcbench.errors import ArcbenchError


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts") / "tinyfaces"
    synth.generate(out, identities=4, images_per_identity=4, verify_identities=0, pairs=0, workers=0)
    return out


@pytest.fixture
def folder_copy(tiny_set, tmp_path):
    dst = tmp_path / "faces"
    shutil.copytree(tiny_set / "train", dst)
    return dst


def test_open_variants_agree(tiny_set):
    by_dir = open_train_set(str(tiny_set))  # holds cls_train.txt
    by_ann = open_train_set(str(tiny_set / "cls_train.txt"))
    by_scan = open_train_set(str(tiny_set / "train"))
    seed_flags = open_train_set(str(tiny_set / "train"), annotation=str(tiny_set / "cls_train.txt"))
    for ds in (by_dir, by_ann, by_scan, seed_flags):
        assert isinstance(ds, TrainSet) and not ds.synthetic
        assert len(ds) == 16 and ds.num_classes == 4
        assert ds.paths == by_scan.paths and ds.labels.tolist() == by_scan.labels.tolist()
    assert by_dir.name == "tinyfaces" and by_scan.name == "train"


def test_items_are_uint8_hwc(tiny_set):
    ds = open_train_set(str(tiny_set), augment=False)
    img, label, bad = ds[5]
    # uint8 HWC: the device normalises (arcbench.data.preprocess.normalise, tests/test_uint8_feed.py)
    assert img.dtype == torch.uint8 and tuple(img.shape) == (112, 112, 3)
    assert label == 1 and bad == ""
    # 96-wide images are letterboxed onto grey 128
    assert (img[:, :8] == 128).all()
    flipped = open_train_set(str(tiny_set), augment=True)
    # random horizontal flip, decided by (seed, epoch, sample): some epochs flip sample 5, some do not,
    # and asking again for the same epoch gives the same answer
    seen = {bool(torch.equal(flipped[(epoch, 5)][0], img)) for epoch in range(12)}
    assert seen == {True, False}
    assert all(torch.equal(flipped[(e, 5)][0], flipped[(e, 5)][0]) for e in range(3))


def test_loader_batches(tiny_set):
    ds = open_train_set(str(tiny_set))
    loader = make_loader(ds, batch_size=4, workers=0, seed=3)
    assert len(loader) == 4 and loader.name == "tinyfaces" and loader.num_classes == 4
    batches = list(loader)
    assert len(batches) == 4
    for images, labels in batches:
        assert images.shape == (4, 112, 112, 3) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() < 4
    assert sorted(torch.cat([lab for _, lab in batches]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert loader.bad_images == 0


def test_corrupt_image_skip_and_fail(folder_copy):
    bad = folder_copy / "id00002" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    (folder_copy / "id00003" / "0.jpg").write_bytes(b"this is not an image")
    ds = open_train_set(str(folder_copy))
    loader = make_loader(ds, batch_size=4, workers=0)
    # the two thinned batches are refilled with their own good samples: the batch shape never changes
    assert [len(lab) for _, lab in loader] == [4, 4, 4, 4] and loader.bad_images == 2
    assert any(str(bad) in b for b in loader.bad_examples)

    failing = make_loader(open_train_set(str(folder_copy), on_bad_image="fail"), batch_size=4, workers=1)
    with pytest.raises(ArcbenchError) as info:
        for _ in failing:
            pass
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert str(bad) in msg or str(folder_copy / "id00003" / "0.jpg") in msg


def test_missing_file_in_annotation_is_a_bad_image(tiny_set, tmp_path):
    ann = tmp_path / "list.txt"
    ann.write_text(f"0;{tiny_set / 'train' / 'id00000' / '0.jpg'}\n1;{tmp_path / 'gone.jpg'}\n")
    ds = open_train_set(str(ann))
    img, label, bad = ds[1]
    assert label == -1 and bad.startswith(str(tmp_path / "gone.jpg")) and "not found" in bad


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("P", "PNG")])
def test_other_colour_modes_load_as_rgb(tmp_path, mode, fmt):
    root = tmp_path / "modes"
    (root / "a").mkdir(parents=True)
    Image.new(mode, (40, 50)).save(root / "a" / f"x.{fmt.lower()}", fmt)
    ds = open_train_set(str(root))
    img, label, bad = ds[0]
    assert bad == "" and label == 0 and tuple(img.shape) == (112, 112, 3)


class _IndexSet(torch.utils.data.Dataset):
    """Label = index, so a batch says which samples a rank saw."""

    def __len__(self):
        return 20

    def __getitem__(self, i):
        return torch.zeros(3, 4, 4), i, ""


def test_rank_shards_are_disjoint_halves():
    ds = _IndexSet()
    seen = []
    for rank in (0, 1):
        loader = make_loader(ds, batch_size=2, rank=rank, world_size=2, seed=5, workers=0)
        assert len(loader) == 5
        loader.set_epoch(1)
        seen.append(torch.cat([lab for _, lab in loader]).tolist())
    assert len(seen[0]) == len(seen[1]) == 10
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(20))
    again = make_loader(ds, batch_size=2, rank=0, world_size=2, seed=5, workers=0)
    again.set_epoch(1)
    assert torch.cat([lab for _, lab in again]).tolist() == seen[0]  # reproducible per (seed, epoch)
    again.set_epoch(2)
    assert torch.cat([lab for _, lab in again]).tolist() != seen[0]


def test_loader_argument_errors(tiny_set):
    ds = open_train_set(str(tiny_set))
    with pytest.raises(ArcbenchError, match="larger than"):
        make_loader(ds, batch_size=64, workers=0)
    with pytest.raises(ArcbenchError, match="rank 2"):
        make_loader(ds, batch_size=2, rank=2, world_size=2, workers=0)
    with pytest.raises(ArcbenchError, match="on_bad_image"):
        make_loader(ds, batch_size=2, workers=0, on_bad_image="ignore")


def test_open_errors(tmp_path):
    with pytest.raises(ArcbenchError, match="SyntheticBatches"):
        open_train_set("synthetic")
    with pytest.raises(ArcbenchError, match="not found"):
        open_train_set(str(tmp_path / "nothing"))


def test_synthetic_batches():
    sb = SyntheticBatches(batch_size=3, num_classes=7, steps_per_epoch=4, input_size=16, seed=1)
    assert sb.synthetic and sb.name == "synthetic" and sb.bad_images == 0
    assert len(sb) == 4 and sb.num_classes == 7
    sb.set_epoch(2)
    batches = list(sb)
    assert len(batches) == 4
    images, labels = batches[0]
    assert images.shape == (3, 3, 16, 16) and images.device.type == "cpu"
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 7
    assert images.min() >= -1 and images.max() <= 1
    assert make_loader(sb, batch_size=3) is sb


class _Cpu:
    torch_type = "cpu"

    def torch_device(self):
        return torch.device("cpu")


def test_run_data_makes_images_at_the_backbone_input_size(tiny_set):
    from arcbench.config import RunConfig
    from arcbench.run.run_data import open_train_data, open_verification

    cfg = RunConfig(train_data="synthetic", batch_size=2, synthetic_classes=3, synthetic_steps=1)
    images, _ = next(iter(open_train_data(cfg, _Cpu(), 0, 1, input_size=64)))
    assert tuple(images.shape) == (2, 3, 64, 64)
    cfg = RunConfig(train_data=str(tiny_set), batch_size=4, workers=0)
    images, labels = next(iter(open_train_data(cfg, _Cpu(), 0, 1, input_size=64)))
    assert tuple(images.shape) == (4, 64, 64, 3) and len(labels) == 4
    assert open_verification(cfg.data) is None


def test_run_data_names_a_generated_verification_set(tmp_path):
    from arcbench.config import RunConfig
    from arcbench.run.run_data import open_verification

    synth.generate(tmp_path, identities=1, images_per_identity=1, verify_identities=20, verify_images=2,
                   pairs=1, workers=0)
    cfg = RunConfig(val_data=str(tmp_path / "verify"), val_pairs=str(tmp_path / "pairs.txt"))
    vset = open_verification(cfg.data)
    # a data synth set is named by its folder (synth.json records it), so two sets never read as one
    assert vset.name == f"{tmp_path.name} (held-out identities)" and len(vset) == 20


@pytest.mark.parametrize("bad_batch", [0, 1])
def test_ranks_take_the_same_steps_when_one_ranks_first_batches_are_all_bad(folder_copy, bad_batch):
    """DDP needs every rank to take the same number of steps. A batch left with fewer than two
    good images is replaced by a good one; when it comes before any good batch of the epoch,
    the next good batch stands in for it (before, that rank took a step fewer and DDP hung)."""
    ds = open_train_set(str(folder_copy))
    loaders = [make_loader(ds, batch_size=2, workers=0, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for loader in loaders:
        loader.set_epoch(0)
    order = [index for _, index in loaders[1].sampler]  # rank 1's (epoch, index) keys, in batch order
    for i in order[:2 * (bad_batch + 1)]:  # rank 1's first bad_batch + 1 batches: every image broken
        with open(ds.paths[i], "wb") as fh:
            fh.write(b"not an image")
    steps = [list(loader) for loader in loaders]
    assert len(steps[0]) == len(steps[1]) == len(loaders[1]) == 4
    assert loaders[1].bad_images == 2 * (bad_batch + 1) and loaders[1].skipped_batches == bad_batch + 1
    first_good = steps[1][bad_batch + 1]
    for images, labels in steps[1][:bad_batch + 1]:  # stand-ins: the first good batch
        assert torch.equal(images, first_good[0]) and torch.equal(labels, first_good[1])
