"""The SDAA model-zoo loss-alignment rule: MRE <= 5% or MAE <= 2e-4, RUN_B the baseline."""
from __future__ import annotations

import json
import os
import sys

import pytest
from click.testing import CliRunner

from report_fixtures import make_run, metrics_lines  # noqa: E402

from arcbench.cli import main  # noqa: E402
from arcbench.errors import ArcbenchError  # noqa: E402
from arcbench.reports.align import align  # noqa: E402
from arcbench.reports.curves import load_loss_curve  # noqa: E402

BASE = [6.0 - 0.25 * i for i in range(20)]  # 6.0 .. 1.25, never zero


def _pair(tmp_path, factor=None, offset=0.0):
    b = make_run(tmp_path, "cuda-fp32", device="cuda", metrics=metrics_lines(BASE))
    a_losses = [x * factor for x in BASE] if factor else [x + offset for x in BASE]
    a = make_run(tmp_path, "sdaa-amp", device="sdaa", metrics=metrics_lines(a_losses))
    return a, b


def test_three_percent_relative_error_passes(tmp_path):
    a, b = _pair(tmp_path, factor=1.03)
    r = align(load_loss_curve(a), load_loss_curve(b), "a", "b")
    assert r.mode == "step" and r.n == 20
    assert r.mre == pytest.approx(0.03)
    assert r.mae == pytest.approx(0.03 * sum(BASE) / len(BASE))
    assert r.passed and r.verdict == "PASS"


def test_ten_percent_relative_error_fails(tmp_path):
    a, b = _pair(tmp_path, factor=1.10)
    r = align(load_loss_curve(a), load_loss_curve(b))
    assert r.mre == pytest.approx(0.10) and not r.passed


def test_baseline_is_the_denominator(tmp_path):
    a, b = _pair(tmp_path, factor=1.25)
    fwd = align(load_loss_curve(a), load_loss_curve(b))
    rev = align(load_loss_curve(b), load_loss_curve(a))
    assert fwd.mre == pytest.approx(0.25) and rev.mre == pytest.approx(0.2)


def test_tiny_absolute_error_passes_by_the_mae_rule():
    import pandas as pd

    # losses near zero: relative error is huge (100%), absolute error tiny
    b = pd.DataFrame({"step": range(4), "epoch": [0] * 4, "iteration": range(4), "loss": [1e-4] * 4})
    a = b.assign(loss=[2e-4] * 4)
    r = align(a, b)
    assert r.mre == pytest.approx(1.0) and r.mae == pytest.approx(1e-4) and r.passed


def test_no_common_steps_aligns_by_position():
    import pandas as pd

    b = pd.DataFrame({"step": range(5), "epoch": [0] * 5, "iteration": [0, 10, 20, 30, 40], "loss": [2.0] * 5})
    a = pd.DataFrame({"step": range(3), "epoch": [0] * 3, "iteration": [1, 2, 3], "loss": [2.02] * 3})
    r = align(a, b)
    assert (r.mode, r.n) == ("index", 3) and r.mre == pytest.approx(0.01)


def test_empty_curve_is_an_error():
    import pandas as pd

    with pytest.raises(ArcbenchError, match="no per-step train.loss"):
        align(pd.DataFrame(columns=["step", "epoch", "iteration", "loss"]),
              pd.DataFrame(columns=["step", "epoch", "iteration", "loss"]), "x", "y")


def test_cli_align_prints_both_errors_and_writes_the_plot(tmp_path, monkeypatch):
    _pair(tmp_path / "runs", factor=1.03)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["report", "--align", "sdaa-amp", "cuda-fp32", "--check"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "mean relative error: 3.0000%" in out and "b = RUN_B" in out
    assert "mean absolute error: 0.1" in out  # 0.03 * mean(BASE) = 0.1087...
    assert "verdict: PASS" in out and "RUN_B: cuda-fp32 (20 steps, baseline)" in out
    png = tmp_path / "runs" / "align_sdaa-amp_vs_cuda-fp32.png"  # in the runs directory, path printed in full
    assert png.read_bytes().startswith(b"\x89PNG") and f"plot: {png}" in out

    res = runner.invoke(main, ["report", "runs", "--align", "runs/sdaa-amp", "runs/cuda-fp32", "--format", "json",
                               "--plot", str(tmp_path / "p.png")])
    body = json.loads(res.stdout)
    assert body["verdict"] == "PASS" and body["mean_relative_error"] == pytest.approx(0.03)
    assert body["baseline"] == "cuda-fp32" and (tmp_path / "p.png").is_file()


def test_cli_align_check_fails_with_exit_1(tmp_path, monkeypatch):
    _pair(tmp_path / "runs", factor=1.10)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["report", "--align", "sdaa-amp", "cuda-fp32", "--check"])
    assert res.exit_code == 1
    assert "mean relative error: 10.0000%" in res.stdout and "verdict: FAIL" in res.stdout
    res = CliRunner().invoke(main, ["report", "--align", "sdaa-amp", "nope"])
    assert res.exit_code == 2 and "'nope'" in res.stderr
