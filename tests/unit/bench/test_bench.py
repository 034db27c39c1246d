"""`arcbench bench` with tiny settings: every field, and derived ratios that add up."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from arcbench.cli import main


@pytest.fixture(autouse=True)
def _plugin(tiny, monkeypatch):
    """tinyplugin importable here and in launched workers (conftest's ``tiny``); one-line errors."""
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)


def bench(tmp_path, *args):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "bench", "--device", "cpu", "--backbone", "tiny",
                                       "--warmup", "1", "--steps", "3", "--classes", "10", "--out",
                                       str(tmp_path / "runs"), "--json", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output[result.output.index("["):])


def test_train_grid_reports_every_field_and_amp_speedup_is_the_ratio(tmp_path):
    rows = bench(tmp_path, "--precision", "fp32,amp", "--batch-size", "4")
    assert len(rows) == 2
    fp32, amp = rows
    assert (fp32["precision"], amp["precision"]) == ("fp32", "amp")
    for r in rows:
        for key in ("device", "backbone", "precision", "nproc", "batch_size", "throughput_median",
                    "throughput_mean", "latency_p50", "latency_p95", "latency_p99", "data_wait_fraction",
                    "peak_memory", "amp_speedup", "scaling_efficiency", "mfu", "flops_per_image", "run_id"):
            assert key in r, key
        assert r["status"] == "completed" and r["throughput_median"] > 0 and r["synthetic"] is True
        assert r["mfu"] is None  # the CPU plugin has no peak FLOP/s
        assert r["flops_per_image"] > 0
        assert r["scaling_efficiency"] == pytest.approx(1.0)
    assert fp32["amp_speedup"] is None
    assert amp["amp_speedup"] == pytest.approx(amp["throughput_median"] / fp32["throughput_median"])
    # each point is a run directory the report can read, carrying the derived figures
    s = json.loads((tmp_path / "runs" / amp["run_id"] / "summary.json").read_text())
    assert s["amp_speedup"] == pytest.approx(amp["amp_speedup"]) and s["mode"] == "bench"


def test_eval_mode_measures_embedding_throughput(tmp_path):
    rows = bench(tmp_path, "--precision", "fp32", "--batch-size", "2,4", "--mode", "eval")
    assert [r["batch_size"] for r in rows] == [2, 4]
    assert all(r["mode"] == "eval" and r["throughput_median"] > 0 for r in rows)


@pytest.mark.slow
def test_scaling_efficiency_is_the_ratio_to_one_process(tmp_path):
    rows = bench(tmp_path, "--precision", "fp32", "--batch-size", "4", "--nproc", "1,2")
    one, two = rows
    assert two["nproc"] == 2 and two["status"] == "completed"
    assert two["scaling_efficiency"] == pytest.approx(two["throughput_median"] / (2 * one["throughput_median"]))


def test_mfu_uses_the_device_peak(monkeypatch):
    from arcbench.bench.grid import derive
    from arcbench.config import RunConfig

    from arcbench.device import Device

    class Dev(Device):
        def peak_flops(self, dtype):
            return 1e12

    rows = [{"backbone": "tiny", "mode": "train", "precision": "fp32", "nproc": 1, "per_process_batch": 4,
             "throughput_median": 100.0}]
    monkeypatch.setattr("arcbench.bench.grid.step_flops", lambda *a, **k: 2_000_000)
    derive(rows, Dev(), RunConfig(backbone="tiny"))
    assert rows[0]["mfu"] == pytest.approx(2e6 * 100 / 1e12) and rows[0]["mfu_note"] is None


def test_mfu_above_one_is_impossible_and_says_why(monkeypatch):
    """A peak lower than the measured FLOP/s (e.g. the fp32 peak for TF32 convolutions) gives no
    MFU figure, with the reason, instead of a utilisation above 100%."""
    from arcbench.bench.grid import derive
    from arcbench.config import RunConfig
    from arcbench.device import Device

    class SlowPeak(Device):
        def peak_flops(self, dtype):
            return 1e8  # a fake peak far below what the rows below achieve

    rows = [{"backbone": "tiny", "mode": "train", "precision": p, "nproc": n, "per_process_batch": 4,
             "throughput_median": thr} for p, n, thr in (("fp32", 1, 100.0), ("amp", 1, 120.0), ("fp32", 2, 190.0),
                                                          ("fp32", 1, 0.01))]
    rows[-1]["per_process_batch"] = 8
    monkeypatch.setattr("arcbench.bench.grid.step_flops", lambda *a, **k: 2_000_000)
    derive(rows, SlowPeak(), RunConfig(backbone="tiny"))
    for row in rows[:3]:
        assert row["mfu"] is None and "exceeds the stated peak 0.00 TFLOP/s" in row["mfu_note"]
    assert rows[3]["mfu"] == pytest.approx(2e6 * 0.01 / 1e8) and rows[3]["mfu"] <= 1


def test_fp32_rows_on_tf32_gpus_use_the_tf32_peak_and_say_so(monkeypatch):
    import torch

    from arcbench.bench.grid import derive
    from arcbench.config import RunConfig
    from arcbench.plugins.devices.cuda import CUDADevice

    gpu = CUDADevice()
    monkeypatch.setattr(gpu, "is_available", lambda: (True, ""))
    monkeypatch.setattr(gpu, "device_name", lambda: "NVIDIA H200")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    rows = [{"backbone": "tiny", "mode": "train", "precision": "fp32", "nproc": 1, "per_process_batch": 4,
             "throughput_median": 1000.0}]
    monkeypatch.setattr("arcbench.bench.grid.step_flops", lambda *a, **k: 10 ** 9)
    derive(rows, gpu, RunConfig(backbone="tiny"))
    assert rows[0]["precision"] == "fp32 (tf32)"
    assert rows[0]["mfu"] == pytest.approx(1e9 * 1000 / 494.5e12)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert torch.backends.cuda.matmul.allow_tf32 is False  # torch's default
    assert gpu.precision_label("fp32") == "fp32" and gpu.peak_flops(torch.float32) == 67e12


def test_repeat_runs_each_point_in_fresh_processes_and_reports_median_and_spread(tmp_path, monkeypatch):
    import numpy as np

    from arcbench.run import launcher

    launched = []
    real = launcher.launch
    monkeypatch.setattr(launcher, "launch", lambda cfg, *a, **k: launched.append(cfg.dist.nproc) or real(cfg, *a, **k))
    (row,) = bench(tmp_path, "--precision", "fp32", "--batch-size", "4", "--repeat", "2")
    assert launched == [1, 1]  # each repeat a process of its own, through the launcher
    assert row["status"] == "completed" and row["repeats"] == 2
    values = row["throughput_repeats"]
    assert len(values) == 2 and all(v > 0 for v in values)
    assert row["throughput_median"] == pytest.approx(float(np.median(values)))
    assert row["throughput_spread"] == pytest.approx((max(values) - min(values)) / np.median(values))
    assert len(set(row["repeat_run_ids"])) == 2  # one run directory per repeat
    for run_id in row["repeat_run_ids"]:
        s = json.loads((tmp_path / "runs" / run_id / "summary.json").read_text())
        assert s["status"] == "completed" and s["card_per_rank"] == [0]


def test_over_repeats_with_planted_figures():
    from arcbench.bench.grid import over_repeats

    runs = [{"status": "completed", "throughput_median": t, "run_id": f"r{i}", "latency_p50": 1 / t}
            for i, t in enumerate((100.0, 80.0, 120.0, 90.0, 110.0))]
    out = over_repeats(runs)
    assert out["throughput_median"] == 100.0 and out["repeats"] == 5
    assert out["throughput_spread"] == pytest.approx((120 - 80) / 100)
    assert out["latency_p50"] == pytest.approx(1 / 100)  # the median repeat's own figures
    failed = over_repeats(runs[:2] + [{"status": "failed", "reason": "boom"}])
    assert failed["status"] == "failed" and failed["reason"] == "boom"
