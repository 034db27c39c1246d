"""``--compile`` without hidden recompiles or eager fallbacks (dynamo on the CPU, backend aot_eager).

* mobilefacenet + arcface, with the loss, is one graph: no graph break;
* a run whose batch bad images thinned never recompiles: the loader refills the batch
  to full size (seen failing before the refill: the thinned batch's new shape recompiled);
* a bench grid of more than 8 compiled points compiles every point afresh (seen failing
  before ``torch._dynamo.reset()`` between points: points 3-9 compiled nothing and reused
  the dynamic-shape graph of earlier points; past dynamo's recompile limit of 8 a point
  runs eagerly without a word).
"""
from __future__ import annotations

import json

import pytest
import torch
import torch._dynamo
from click.testing import CliRunner

from arcbench.cli import main
from arcbench.plugins.devices.cpu import CPUDevice


@pytest.fixture()
def dynamo(monkeypatch):
    """A clean dynamo with the cheap aot_eager backend for the CPU device; reset afterwards."""
    torch._dynamo.reset()
    monkeypatch.setattr(CPUDevice, "compile_backend", "aot_eager")
    yield
    torch._dynamo.reset()


def test_mobilefacenet_with_arcface_and_its_loss_is_one_graph(dynamo):
    from arcbench.train.model import WithLoss, build_face_model
    from arcbench.config import RunConfig

    face = build_face_model(RunConfig(backbone="mobilefacenet", head="arcface"), 100)
    face = face.to(memory_format=torch.channels_last).train()
    step = WithLoss(face, face.head_computes_loss)
    x = torch.randn(4, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    explained = torch._dynamo.explain(step)(x, torch.randint(0, 100, (4,)))
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def test_a_thinned_batch_is_refilled_and_nothing_recompiles(dynamo, tiny, tmp_path, faces, monkeypatch):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(faces / "train", train)  # the session's set stays intact
    bad = sorted(train.rglob("*.jpg"))[3]
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG: its batch loses one sample
    with torch._dynamo.config.patch(error_on_recompile=True):
        result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", "cpu",
                                           "--backbone", "tiny_static", "--train-data", str(train),
                                           "--epochs", "2", "--batch-size", "8", "--workers", "0", "--compile",
                                           "--quiet", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    s = json.loads(next((tmp_path / "runs").iterdir()).joinpath("summary.json").read_text())
    assert s["status"] == "completed" and s["bad_images"] == 2 and s["steps"] == 12  # 6 steps an epoch, all kept


def test_a_bench_grid_of_nine_compiled_points_compiles_each_one(dynamo, tiny, tmp_path, monkeypatch):
    from arcbench.bench import grid as bench

    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(1)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    monkeypatch.setattr(CPUDevice, "compile_backend", staticmethod(counting_backend))
    per_point = []
    run_point = bench.run_point

    def counted(*args, **kwargs):
        before = len(compiles)
        out = run_point(*args, **kwargs)
        per_point.append(len(compiles) - before)
        return out

    monkeypatch.setattr(bench, "run_point", counted)
    sizes = ",".join(str(b) for b in range(2, 11))  # 9 points, one model each
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "bench", "--device", "cpu",
                                       "--backbone", "tiny_static",
                                       "--precision", "fp32", "--batch-size", sizes, "--warmup", "1", "--steps", "1",
                                       "--classes", "10", "--compile", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert len(per_point) == 9 and all(n >= 1 for n in per_point), per_point  # none ran eagerly
