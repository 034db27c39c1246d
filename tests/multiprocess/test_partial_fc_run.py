"""Partial FC through the command line: `arcbench run --head partial_fc` and the class-count
axis of `arcbench bench`.

The head itself is tested against the ordinary heads in test_partial_fc.py; here the
trainer's use of it is: the head's own loss, the backbone alone under DDP, checkpoints
that do not depend on the process count (a run saved at 2 processes resumes at 3), the
bench's memory planning, FLOPs and report columns.  Three processes need three cards:
the multi-process runs use the ``fakecards`` stand-in accelerator (tensors on the host,
gloo), as test_multicard.py does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from arcbench.cli import main
from arcbench.config import RunConfig
from arcbench.errors import ArcbenchError
from arcbench.plugins.heads.sharding import num_sample

from testutil import IMPORT_PATH, free_port

HERE = Path(__file__).resolve().parents[1]  # tests/
C, DIM, S = 11, 32, 16.0  # classes (divide by neither 2 nor 3), the tiny backbone's embedding, its scale


def arcbench(*args, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = IMPORT_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ARCBENCH_DEBUG", None)
    env.update(OMP_NUM_THREADS="1", FAKECARDS_COUNT="4")
    cmd = [sys.executable, "-m", "arcbench", "--plugin", "fakecards", "--plugin", "tinyplugin", *args,
           "--master-port", str(free_port())]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout
    return p.stdout


def losses(run_dir: Path) -> dict:
    """{step: loss} of the whole run (the history rides in the checkpoint across resumes)."""
    ck = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return {int(step): float(v) for step, v in ck["history"]["loss"]}


# ------------------------------------------------------------------ config

def test_sample_rate_and_margin_belong_to_partial_fc():
    RunConfig(head="partial_fc", sample_rate=0.1, margin="cosface", margin_m=0.3).validate()
    for bad, words in [(dict(head="arcface", sample_rate=0.5), "apply to --head partial_fc"),
                       (dict(head="cosface", margin="arcface"), "apply to --head partial_fc"),
                       (dict(head="partial_fc", sample_rate=0.0), "(0, 1]"),
                       (dict(head="partial_fc", sample_rate=1.5), "(0, 1]"),
                       (dict(head="partial_fc", margin="combined", margin_m=0.3), "combined margin")]:
        with pytest.raises(ArcbenchError) as exc:
            RunConfig(**bad).validate()
        assert words in str(exc.value), (bad, str(exc.value))


def test_build_face_model_passes_margin_rate_and_seed():
    from arcbench.train.model import build_face_model

    face = build_face_model(RunConfig(backbone="mobilefacenet", head="partial_fc", margin="cosface",
                                      margin_m=0.3, sample_rate=0.25, seed=7), 100)
    head = face.head
    assert (head.margin, head.m, head.sample_rate, head.seed, head.s) == ("cosface", 0.3, 0.25, 7, 32.0)
    assert face.head_computes_loss and face.head_sharded
    assert head.weight.shape == (100, 128) and head.world_size == 1
    plain = build_face_model(RunConfig(backbone="mobilefacenet"), 100)
    assert not plain.head_computes_loss and not plain.head_sharded


def test_cli_refuses_a_sample_rate_for_the_full_head(tmp_path):
    r = CliRunner().invoke(main, ["run", "--device", "cpu", "--train-data", "synthetic", "--sample-rate", "0.5",
                                  "--out", str(tmp_path)])
    assert r.exit_code != 0
    assert "--sample-rate and --margin apply to --head partial_fc" in r.output
    assert "Traceback" not in r.output


# -------------------------------------------------------------------- run

def test_one_process_trains_with_the_heads_own_loss_and_clipping(tmp_path):
    r = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", "cpu", "--backbone", "tiny",
                                  "--train-data", "synthetic", "--synthetic-classes", str(C), "--synthetic-steps",
                                  "3", "--epochs", "1", "--batch-size", "4", "--head", "partial_fc",
                                  "--sample-rate", "0.5", "--grad-clip", "0.5", "--quiet", "--out", str(tmp_path),
                                  "--run-id", "one"])
    assert r.exit_code == 0, r.output
    assert "classes / sample rate     11 / 0.5 (head 0.00 MiB per process)" in r.output
    s = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert s["status"] == "completed" and s["head"] == "partial_fc"
    assert (s["num_classes"], s["sample_rate"]) == (C, 0.5)
    # centres + gradient + SGD momentum, fp32, all on the one process
    assert s["head_memory"] == 3 * C * DIM * 4 and s["head_params_per_rank"] == C * DIM
    found = losses(tmp_path / "one")
    assert sorted(found) == [1, 2, 3] and all(torch.isfinite(torch.tensor(list(found.values()))))
    ck = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["head"] is None and ck["head_full"]["weight"].shape == (C, DIM)
    assert ck["head_full"]["sample_step"] == 3  # every step sampled (r < 1), and the count is saved
    # the layout earlier versions saved, so their checkpoints still resume: the full state's keys
    # and format, and the centres' optimiser state in it rather than in the optimiser's
    assert ck["format"] == "arcbench-train-v1" and ck["head_full"]["format"] == "arcbench.partial_fc/1"
    assert set(ck["head_full"]) == {"format", "num_classes", "in_features", "sample_step", "weight", "optimizer",
                                    "optimizer_scalars"}
    assert set(ck["head_full"]["optimizer"]) == {"momentum_buffer"}
    import tinyplugin

    assert len(ck["optimizer"]["state"]) == len(list(tinyplugin.Tiny(embedding_size=DIM).parameters()))


def _step3_reference(saved: dict, world: int, per_process: int) -> float:
    """The global loss of the first step after loading ``saved`` at ``world`` processes, computed
    in this one process: each rank's synthetic batch through the backbone (batch norm per rank,
    as under DDP), then the full-softmax ArcFace loss over the whole [C, D] centres (r = 1)."""
    from arcbench import registry
    from arcbench.data.synthetic_batches import SyntheticBatches

    import tinyplugin

    backbone = tinyplugin.Tiny(embedding_size=DIM)
    backbone.load_state_dict(saved["backbone"])
    backbone.train()
    head = registry.create_head("arcface", DIM, C, s=S)
    with torch.no_grad():
        head.weight.copy_(saved["head_full"]["weight"])
    xs, ys = [], []
    for rank in range(world):
        data = SyntheticBatches(per_process, num_classes=C, steps_per_epoch=1, seed=0 + rank)
        images, labels = next(iter(data))
        with torch.no_grad():
            xs.append(backbone(images))
        ys.append(labels)
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        return float(F.cross_entropy(head(x, y), y))


@pytest.mark.slow
def test_saved_at_two_processes_resumes_at_three(tmp_path):
    """2 steps at 2 processes; then 3 processes from that checkpoint, once in two segments
    (2 + 2 steps, with a 3-process checkpoint between) and once without a break: the same
    losses.  The first step at 3 processes also equals a single-process computation from
    the saved state, so the centres were re-sharded right, not just the same way twice."""
    out = tmp_path / "runs"
    common = ["--backbone", "tiny", "--train-data", "synthetic", "--synthetic-classes", str(C),
              "--synthetic-steps", "2", "--epochs", "3", "--head", "partial_fc", "--no-channels-last",
              "--log-interval", "1", "--quiet", "--lr", "0.05"]
    arcbench("run", "--device", "fakecard", *common, "--nproc", "2", "--batch-size", "6", "--max-steps", "2",
             "--out", str(out), "--run-id", "a")
    a, b = out / "a", out / "b"
    saved = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    assert saved["global_step"] == 2 and saved["head"] is None
    full = saved["head_full"]
    assert full["weight"].shape == (C, DIM) and full["optimizer"]["momentum_buffer"].shape == (C, DIM)
    assert float(full["optimizer"]["momentum_buffer"].abs().sum()) > 0
    # the centres' momentum lives in head_full only; the optimizer state holds the backbone's
    import tinyplugin

    assert len(saved["optimizer"]["state"]) == len(list(tinyplugin.Tiny(embedding_size=DIM).parameters()))
    shutil.copytree(a, b)

    arcbench("run", "--resume", str(a), "--nproc", "3", "--max-steps", "4")
    mid = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    assert mid["global_step"] == 4 and mid["head_full"]["weight"].shape == (C, DIM)
    arcbench("run", "--resume", str(a), "--nproc", "3", "--max-steps", "6")
    arcbench("run", "--resume", str(b), "--nproc", "3", "--max-steps", "6")

    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) == [1, 2, 3, 4, 5, 6]
    assert [la[k] for k in (1, 2)] == [lb[k] for k in (1, 2)]
    torch.testing.assert_close(torch.tensor([la[k] for k in range(3, 7)]),
                               torch.tensor([lb[k] for k in range(3, 7)]), rtol=1e-5, atol=1e-5)
    assert abs(la[3] - _step3_reference(saved, world=3, per_process=4)) < 1e-4 * max(1.0, abs(la[3]))
    end_a = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["head_full"]
    end_b = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["head_full"]
    torch.testing.assert_close(end_a["weight"], end_b["weight"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(end_a["optimizer"]["momentum_buffer"], end_b["optimizer"]["momentum_buffer"],
                               rtol=1e-5, atol=1e-5)
    s = json.loads((a / "summary.json").read_text())
    assert s["status"] == "completed" and s["nproc"] == 3 and s["per_process_batch"] == 4
    assert s["batch_size"] == 12  # the global batch is kept when the process count changes
    assert s["head_params_per_rank"] == 4 * DIM  # rank 0's shard of 11 over 3: 4 rows


# ------------------------------------------------------------------ bench

def _bench(tmp_path, *args):
    r = CliRunner().invoke(main, ["--plugin", "tinyplugin", "bench", "--device", "cpu", "--backbone", "tiny",
                                  "--precision", "fp32", "--batch-size", "4", "--warmup", "1", "--steps", "2",
                                  "--out", str(tmp_path / "runs"), *args])
    assert r.exit_code == 0, r.output
    return r


def test_bench_class_count_and_sample_rate_axes(tmp_path, monkeypatch):
    r = _bench(tmp_path, "--num-classes", "10,40", "--sample-rate", "1.0,0.5", "--json")
    rows = json.loads(r.output)
    assert [(row["num_classes"], row["sample_rate"]) for row in rows] == [(10, 1.0), (10, 0.5), (40, 1.0), (40, 0.5)]
    for row in rows:
        assert row["status"] == "completed" and row["head"] == "partial_fc"
        c = row["num_classes"]
        # measured on the process = planned: centres, gradient, momentum (fp32)
        assert row["head_memory"] == row["head_memory_planned"] == 3 * c * DIM * 4
        assert row["throughput_median"] > 0 and row["peak_memory"] > 0
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert (summary["num_classes"], summary["sample_rate"]) == (c, row["sample_rate"])
    by = {(row["num_classes"], row["sample_rate"]): row for row in rows}
    for c in (10, 40):  # FLOPs count only the sampled centres: 3 x 2 x D per centre left out
        saved = c - num_sample(c, 0.5)
        assert by[(c, 1.0)]["flops_per_image"] - by[(c, 0.5)]["flops_per_image"] == 3 * 2 * DIM * saved
    assert by[(40, 1.0)]["flops_per_image"] - by[(10, 1.0)]["flops_per_image"] == 3 * 2 * DIM * 30

    report = CliRunner().invoke(main, ["report", str(tmp_path / "runs"), "--format", "csv"])
    assert report.exit_code == 0, report.output
    import csv
    import io

    table = list(csv.DictReader(io.StringIO(report.output)))
    assert sorted((int(t["num_classes"]), float(t["sample_rate"])) for t in table) == sorted(by)
    monkeypatch.setenv("COLUMNS", "250")
    terminal = CliRunner().invoke(main, ["report", str(tmp_path / "runs")])
    header = terminal.output.splitlines()[0].split()
    assert "classes" in header and "r" in header, terminal.output


def test_bench_skips_a_head_that_does_not_fit_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("arcbench.bench.grid.memory_per_process",
                        lambda device, nproc: (50_000, "the host has 0.1 GB available"))
    r = _bench(tmp_path, "--num-classes", "10,100000", "--sample-rate", "0.5")
    assert "Traceback" not in r.output and "out of memory" not in r.output.lower()
    line = [ln for ln in r.output.splitlines() if ln.startswith("skipped: 100,000 classes")]
    assert len(line) == 1, r.output
    assert "100,000 classes x 32 dims = 0.0 GB per rank with momentum" in line[0]
    assert "the host has 0.1 GB available" in line[0]
    rows = json.loads(_bench(tmp_path, "--num-classes", "10,100000", "--sample-rate", "0.5", "--json").output)
    assert [row["status"] for row in rows] == ["completed", "skipped (does not fit)"]
    skipped = rows[1]
    assert skipped["throughput_median"] is None and skipped["run_dir"] is None
    assert skipped["head_memory_planned"] == 3 * 100_000 * DIM * 4
    assert skipped["num_classes"] == 100_000 and skipped["sample_rate"] == 0.5


def test_memory_per_process_on_the_cpu_shares_the_hosts_available_memory(monkeypatch):
    from arcbench.bench import grid as bench_mod
    from arcbench import registry

    assert bench_mod.host_available_memory() is None or bench_mod.host_available_memory() > 0
    monkeypatch.setattr(bench_mod, "host_available_memory", lambda: 16 * 10 ** 9)
    cpu = registry.get_device("cpu")
    assert bench_mod.memory_per_process(cpu, 1) == (16 * 10 ** 9, "the host has 16.0 GB available")
    assert bench_mod.memory_per_process(cpu, 2) == (8 * 10 ** 9, "the host has 16.0 GB available, 8.0 GB per process")
    monkeypatch.setattr(bench_mod, "host_available_memory", lambda: None)
    assert bench_mod.memory_per_process(cpu, 2)[0] is None  # unknown: the point runs, nothing is refused


def test_bench_head_plan_message_for_a_2m_class_full_head(monkeypatch):
    from arcbench import registry
    from arcbench.bench.grid import head_plan

    monkeypatch.setattr("arcbench.bench.grid.memory_per_process",
                        lambda device, nproc: (16 * 10 ** 9, "the device has 16.0 GB"))
    plan = head_plan("iresnet50", "arcface", 2_000_000, 1.0, 1, 64, device=None)
    sharded = head_plan("iresnet50", "partial_fc", 2_000_000, 0.1, 8, 64, device=None)
    assert plan["fit_error"].startswith("2,000,000 classes x 512 dims = 8.2 GB per rank with momentum")
    assert plan["fit_error"].endswith("the device has 16.0 GB")
    assert plan["head_memory_planned"] == 3 * 2_000_000 * 512 * 4
    assert sharded["fit_error"] is None and sharded["head_memory_planned"] == 3 * 250_000 * 512 * 4
    assert registry.get_backbone("iresnet50").embedding_size == 512


@pytest.mark.slow
def test_two_million_classes_train_at_two_processes_within_memory(tmp_path):
    """The issue's CPU check: 2,000,000 classes, mobilefacenet (128 dims), r = 0.1, 2 processes
    train a few synthetic steps, and the row says what the head took: 1M x 128 fp32 centres,
    gradient and momentum per process = 1.536 GB (measured here: peak RSS ~3.0 GB per process)."""
    from arcbench.bench.grid import host_available_memory

    avail = host_available_memory()
    if avail is not None and avail < 9e9:
        pytest.skip(f"needs ~9 GB of free host memory, {avail / 1e9:.1f} GB available")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = IMPORT_PATH + os.pathsep + env.get("PYTHONPATH", "")  # plugins loaded by earlier tests
    env.pop("ARCBENCH_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "arcbench", "bench", "--device", "cpu", "--backbone", "mobilefacenet",
                        "--num-classes", "2000000", "--sample-rate", "0.1", "--nproc", "2", "--batch-size", "8",
                        "--precision", "fp32", "--warmup", "1", "--steps", "2", "--out", str(tmp_path), "--json"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (row,) = json.loads(p.stdout)
    assert row["status"] == "completed", row
    assert (row["num_classes"], row["sample_rate"], row["nproc"], row["head"]) == (2_000_000, 0.1, 2, "partial_fc")
    assert row["head_memory"] == row["head_memory_planned"] == 3 * 1_000_000 * 128 * 4
    assert row["throughput_median"] > 0
    assert row["head_memory"] < row["peak_memory"] < 5e9, row["peak_memory"]
    # 3 x (backbone forward + 2 x 128 x 200,000 sampled centres) per image
    assert row["flops_per_image"] > 3 * 2 * 128 * 200_000
    summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
    assert summary["samples_per_rank"] == [24, 24]  # 3 steps x 8 images on each process


def test_an_interrupt_at_several_processes_keeps_the_last_checkpoint_without_gathering():
    """Only rank 0 checkpoints while an interrupt unwinds; gathering the centres there would wait
    for ranks that are not in the gather. It must return at once and say so; at a step boundary
    (no interrupt) every rank gathers."""
    from types import SimpleNamespace

    from arcbench.train.checkpointer import Checkpointer, SaveReason
    from arcbench.train.progress import Progress

    calls = []
    head = SimpleNamespace(full_state=lambda opt: calls.append("gather") or None)  # the head's hook
    said = []
    training = SimpleNamespace(face=SimpleNamespace(head_sharded=True, head=head), optimizer=None)

    def checkpointer(rank):
        return Checkpointer(training, {"progress": Progress()}, device=None, recorder=None, rank=rank, world_size=2,
                            run_dir=None, log=said.append, quiet=False)

    assert checkpointer(0).save(SaveReason.INTERRUPT) is False
    assert calls == [] and len(said) == 1 and "the last one is kept" in said[0]
    checkpointer(1).save(SaveReason.STEP_INTERVAL)  # a step boundary: every rank takes part in the gather
    assert calls == ["gather"]
