"""Bench points long enough to trust on an accelerator, and tails only from enough samples."""
from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from arcbench.bench import grid as bench
from arcbench import registry
from arcbench.cli import main



def test_accelerator_points_default_to_200_steps_and_at_least_10_seconds(monkeypatch):
    from fakecards import FakeCardDevice

    assert bench.default_steps(registry.get_device("cpu")) == (20, 0.0)
    assert bench.default_steps(FakeCardDevice()) == (200, 10.0)
    asked = []

    def fake_point(base, **kw):  # 20 ms a step
        asked.append(kw["steps"])
        return {"status": "completed", "timed_seconds": 0.02 * kw["steps"], "run_id": f"run{len(asked)}"}

    monkeypatch.setattr(bench, "_run_point", fake_point)
    s = bench.run_point(None, precision="amp", batch_size=4, nproc=1, mode="train", warmup=5, steps=200,
                        min_seconds=10.0)
    # 200 steps took 4 s: measured again with enough steps for 10 s (and a 10 % margin)
    assert asked == [200, 550] and s["timed_seconds"] >= 10.0 and s["probe_run_id"] == "run1"
    asked.clear()
    s = bench.run_point(None, precision="amp", batch_size=4, nproc=1, mode="train", warmup=5, steps=600,
                        min_seconds=10.0)
    assert asked == [600] and "probe_run_id" not in s  # 12 s already


def test_the_table_says_why_p99_is_missing(tmp_path, tiny):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "bench", "--device", "cpu", "--backbone", "tiny",
                                       "--precision", "fp32,amp", "--batch-size", "4", "--warmup", "1", "--steps",
                                       "3", "--classes", "10", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "(p99: not reported below 100 timed steps; these points timed 3)" in result.output
    assert "(step times: synchronize; end of one step to the end of the next)" in result.output
    assert "amp bf16" in result.output  # the dtype that ran
