"""``--decode device``: refused in one line where torchvision's GPU decoder is missing; the
card-side path (bytes from the workers, flip, letterbox, normalise) checked on the CPU with a
PIL decoder standing in for nvJPEG."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from arcbench.cli import main
from arcbench.data import device_decode
from arcbench.data.device_feed import DeviceFeed
from arcbench.data.train_sets import TrainSet, make_loader
from arcbench.errors import ArcbenchError
from arcbench.data.preprocess import load_uint8
from arcbench.registry import get_device


def _pil_decoder(datas, device):
    return [torch.from_numpy(np.array(Image.open(io.BytesIO(d.numpy().tobytes())).convert("RGB")))
            .permute(2, 0, 1).to(device) for d in datas]


@pytest.fixture
def stand_in_decoder(monkeypatch):
    monkeypatch.setattr(device_decode, "DECODER", _pil_decoder)


def _jpeg(path, size, seed):
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    small.resize(size, Image.BICUBIC).save(path, "JPEG", quality=90)
    return str(path)


class _Cuda:
    name, torch_type = "cuda", "cuda"


def test_without_torchvision_the_flag_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as on the CPU build: not importable
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    why = device_decode.support(_Cuda())
    assert why and "torchvision" in why and "\n" not in why and "--decode host" in why
    assert "CUDA" in device_decode.support(get_device("cpu"))
    with pytest.raises(ArcbenchError):
        device_decode.check(_Cuda())


@pytest.mark.parametrize("command", ["run", "bench"])
def test_cli_refuses_decode_device_here_with_one_line(tmp_path, command):
    folder = tmp_path / "f" / "a"
    folder.mkdir(parents=True)
    for i in range(4):
        _jpeg(folder / f"{i}.jpg", (112, 112), i)
    args = ["--device", "cpu", "--decode", "device", "--out", str(tmp_path / "runs")]
    args += (["--train-data", str(tmp_path / "f"), "--max-steps", "1"] if command == "run"
             else ["--data", str(tmp_path / "f"), "--mode", "data", "--batch-size", "2"])
    result = CliRunner().invoke(main, [command, *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--decode device needs" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run dir made


def test_card_side_decode_matches_the_host_path(tmp_path, stand_in_decoder):
    paths = [_jpeg(tmp_path / f"s{i}.jpg", (112, 112), i) for i in range(4)]  # no resize: exact
    paths += [_jpeg(tmp_path / f"r{i}.jpg", (96, 112), 10 + i) for i in range(2)]  # letterboxed
    Image.open(paths[0]).save(tmp_path / "p.png")
    paths.append(str(tmp_path / "p.png"))  # not a JPEG: decoded on the host, travels as pixels
    labels = list(range(len(paths)))
    for epoch in range(2):  # both flips of most samples
        host = TrainSet("h", len(paths), paths=paths, labels=labels)
        dev = TrainSet("d", len(paths), paths=paths, labels=labels, decode="device")
        host.flip_seed = dev.flip_seed = 3
        items = [dev[(epoch, i)] for i in range(len(paths))]
        assert isinstance(items[0][0], device_decode.Encoded) and items[0][0].data is not None
        assert items[-1][0].pixels is not None  # the PNG
        images, _ = next(DeviceFeed([(device_decode.EncodedBatch([x[0] for x in items]),
                                      torch.tensor(labels))], get_device("cpu")))
        want, _ = next(DeviceFeed([(torch.stack([host[(epoch, i)][0] for i in range(len(paths))]),
                                    torch.tensor(labels))], get_device("cpu")))
        assert images.shape == want.shape == (len(paths), 3, 112, 112)
        assert torch.equal(images[:4], want[:4]) and torch.equal(images[6], want[6])
        # the letterbox resize is torch's bicubic, not PIL's: close, not identical
        levels = (images[4:6] - want[4:6]).abs().mul(127.5)
        assert levels.mean() < 1.5 and levels.max() <= 40
        assert torch.equal(images[4:6, :, :, :8], want[4:6, :, :, :8])  # the grey bars


def test_loader_hands_over_bytes_and_bad_files_stay_bad_images(tmp_path, stand_in_decoder):
    paths = [_jpeg(tmp_path / f"{i}.jpg", (112, 112), i) for i in range(5)] + [str(tmp_path / "gone.jpg")]
    ds = TrainSet("d", 2, paths=paths, labels=[0, 1] * 3, decode="device", augment=False)
    loader = make_loader(ds, batch_size=6, workers=0)
    (images, labels), = list(loader)
    # the missing file is a bad image; the batch is refilled to full size with its own good samples
    assert isinstance(images, device_decode.EncodedBatch) and len(images) == len(labels) == 6
    assert loader.bad_images == 1 and images.samples[5] is images.samples[0] and labels[5] == labels[0]
    out, _ = next(DeviceFeed([(images, labels)], get_device("cpu")))
    assert out.shape == (6, 3, 112, 112) and out.dtype == torch.float32 and torch.equal(out[5], out[0])


def test_a_corrupt_jpeg_body_is_one_error_naming_the_file(tmp_path, stand_in_decoder):
    good = _jpeg(tmp_path / "good.jpg", (112, 112), 1)
    data = open(good, "rb").read()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 3])  # the header survives, the body does not
    ds = TrainSet("d", 1, paths=[good, str(bad)], labels=[0, 0], decode="device", augment=False)
    batch = device_decode.EncodedBatch([ds[0][0], ds[1][0]])
    with pytest.raises(ArcbenchError) as err:
        device_decode.decode_batch(batch, torch.device("cpu"))
    assert str(bad) in str(err.value) and "cannot decode image on the device" in str(err.value)
