"""A backbone's registered ``input_size`` reaches everything that feeds it images.

``tiny64`` (tests/standins/tinyplugin.py) is registered with ``input_size=64`` and
asserts on any other size, so a hard-coded 112 anywhere on a path fails the
test that takes that path: bench (train and eval points, FLOP counts),
evaluation (``arcbench eval``, ``verify``, ``run --do_eval``) and training on
synthetic tensors and on an image folder.
"""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from arcbench import registry
from arcbench.cli import main
from testutil import data_args, only_run_dir

pytestmark = pytest.mark.usefixtures("tiny")  # tinyplugin importable here and in launched workers


def cli(*args):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture()
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny64.pth"
    torch.save(registry.create_backbone("tiny64").state_dict(), path)
    return path


def test_the_guard_refuses_112_pixels():
    spec = registry.get_backbone("tiny64")
    assert spec.input_size == 64
    model = spec.create().eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 32)
    with pytest.raises(AssertionError, match="tiny64 takes 3x64x64 images, got 3x112x112"):
        model(torch.zeros(2, 3, 112, 112))


# ------------------------------------------------------------------ bench and FLOPs

def test_flops_are_counted_at_the_registered_size():
    from arcbench.bench.grid import step_flops

    rows = json.loads(cli("backbones", "--json", "tiny64").stdout)
    assert rows[0]["input_size"] == 64 and rows[0]["gflops"] is not None
    assert step_flops("tiny64", "arcface", 1, "eval") > 0


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bench_feeds_the_registered_size(tmp_path, mode):
    out = cli("bench", "--backbone", "tiny64", "--device", "cpu", "--mode", mode, "--precision", "fp32",
              "--batch-size", 4, "--warmup", 1, "--steps", 2, "--num-classes", 10, "--out", tmp_path, "--json")
    (row,) = json.loads(out.stdout)
    assert row["status"] == "completed", row.get("reason")
    assert row["throughput_median"] > 0 and row["flops_per_image"] > 0


# ------------------------------------------------------------------ evaluation

def test_eval_and_verify_embed_at_the_registered_size(faces, weights):
    out = cli("eval", "--backbone", "tiny64", "--weights", weights, "--val-data", faces / "verify",
              "--val-pairs", faces / "pairs.txt", "--device", "cpu", "--workers", 0, "--json")
    assert json.loads(out.stdout)["pairs_used"] > 0
    a, b = sorted((faces / "verify").rglob("*.jpg"))[:2]
    verdict = json.loads(cli("verify", a, b, "--backbone", "tiny64", "--weights", weights, "--json").stdout)
    assert 0 <= verdict["distance"] <= 2


def test_an_eval_run_embeds_at_the_registered_size(faces, weights, tmp_path):
    cli("run", "--backbone", "tiny64", "--device", "cpu", "--do_eval", "True", "--weights", weights,
        "--val-data", faces / "verify", "--val-pairs", faces / "pairs.txt", "--quiet", "--out", tmp_path)
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["lfw_accuracy"] is not None


# ------------------------------------------------------------------ training

def test_training_on_synthetic_tensors_uses_the_registered_size(faces, tmp_path):
    cli("run", "--backbone", "tiny64", "--device", "cpu", "--train-data", "synthetic", "--synthetic-classes", 10,
        "--synthetic-steps", 3, "--epochs", 1, "--batch-size", 4, "--val-data", faces / "verify",
        "--val-pairs", faces / "pairs.txt", "--quiet", "--out", tmp_path)
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["lfw_accuracy"] is not None


def test_training_on_an_image_folder_uses_the_registered_size(faces, tmp_path):
    cli("run", "--backbone", "tiny64", "--device", "cpu", *data_args(faces), "--epochs", 1, "--batch-size", 8,
        "--quiet", "--out", tmp_path)
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["lfw_accuracy"] is not None
