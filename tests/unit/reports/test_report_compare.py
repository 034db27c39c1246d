"""`arcbench report --compare BASE NEW`: configuration matching and regression flags."""
from __future__ import annotations

import json
import os
import sys

from click.testing import CliRunner

from report_fixtures import make_run  # noqa: E402

from arcbench.cli import main  # noqa: E402


def _sets(tmp_path, new_thr=800.0, new_acc=0.985):
    base, new = tmp_path / "base", tmp_path / "new"
    make_run(base, "sdaa-1", device="sdaa", throughput_median=1000.0, lfw_accuracy=0.985)
    make_run(base, "sdaa-1b", device="sdaa", throughput_median=1010.0, lfw_accuracy=0.985)
    make_run(base, "cuda-1", device="cuda", throughput_median=2000.0)
    make_run(base, "old-only", device="cpu", backbone="iresnet50", throughput_median=10.0)
    make_run(new, "sdaa-1", device="sdaa", throughput_median=new_thr, lfw_accuracy=new_acc)
    make_run(new, "cuda-1", device="cuda", throughput_median=2050.0)
    make_run(new, "cuda-crashed", device="cuda", status="failed", throughput_median=5.0)
    return str(base), str(new)


def test_twenty_percent_throughput_drop_is_flagged(tmp_path):
    base, new = _sets(tmp_path, new_thr=804.0)  # base median 1005 -> 804: -20%
    res = CliRunner().invoke(main, ["report", "--compare", base, new, "--format", "json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    rows = {(r["device"], r["backbone"]): r for r in body["configurations"]}
    sdaa = rows[("sdaa", "mobilefacenet")]
    assert sdaa["base_runs"] == 2 and sdaa["new_runs"] == 1
    assert sdaa["throughput_change_pct"] == -20.0
    assert sdaa["regression"] is True and sdaa["verdict"].startswith("REGRESSION (throughput -20.0%")
    cuda = rows[("cuda", "mobilefacenet")]
    assert cuda["verdict"] == "ok" and cuda["new_runs"] == 1  # the failed run is left out
    assert cuda["throughput_change_pct"] == 2.5
    assert rows[("cpu", "iresnet50")]["verdict"] == "only in base"
    assert body["regressions"] == 1


def test_text_output_and_check_exit_codes(tmp_path):
    base, new = _sets(tmp_path, new_thr=804.0)
    runner = CliRunner()
    res = runner.invoke(main, ["report", "--compare", base, new])
    assert res.exit_code == 0 and "-20.0%" in res.stdout and "1 regression(s)" in res.stdout
    res = runner.invoke(main, ["report", "--compare", base, new, "--check"])
    assert res.exit_code == 1 and "check failed" in res.stderr
    # within a 25% threshold it is not a regression
    res = runner.invoke(main, ["report", "--compare", base, new, "--check", "--threshold", "25"])
    assert res.exit_code == 0, res.output


def test_accuracy_drop_beyond_tolerance_is_a_regression(tmp_path):
    base, new = _sets(tmp_path, new_thr=1005.0, new_acc=0.978)  # -0.7 points
    res = CliRunner().invoke(main, ["report", "--compare", base, new, "--format", "json"])
    row = [r for r in json.loads(res.stdout)["configurations"] if r["device"] == "sdaa"][0]
    assert round(row["accuracy_change_points"], 6) == -0.7
    assert row["regression"] and "accuracy -0.70 points" in row["verdict"]


def test_compare_needs_existing_dirs(tmp_path):
    res = CliRunner().invoke(main, ["report", "--compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert res.exit_code == 2 and "runs directory not found" in res.stderr


# ---------------------------------------------------------------- noise-aware verdicts (planted per-step times)
import numpy as np  # noqa: E402

from arcbench.reports import compare as compare_mod  # noqa: E402
from report_fixtures import dlll  # noqa: E402


def _step_log(ips, warmup_ips=(), iters_per_epoch=1000, start=0):
    """metrics.jsonl with METADATA, then slow warm-up steps, then the planted per-step images/s
    (``start``: the steps already done, for a resumed segment)."""
    out = [dlll({"type": "METADATA", "metric": "train.total_ips", "metadata": {"unit": "images/s"}})]
    for i, v in enumerate(list(warmup_ips) + list(ips), start):
        e, it = divmod(i, iters_per_epoch)
        out.append(dlll({"type": "LOG", "step": [e + 1, it + 1],
                         "data": {"train.loss": 1.0, "train.total_ips": float(v)}}))
    return "".join(out)


def _planted(tmp_path, base_ips, new_ips, *, warmup=5, base_steps=None, new_steps=None, **over):
    """One run a side (or several: lists of arrays) whose logs hold exactly these per-step figures."""
    dirs = []
    for side, runs, steps in (("base", base_ips, base_steps), ("new", new_ips, new_steps)):
        runs = runs if isinstance(runs, list) else [runs]
        for i, ips in enumerate(runs):
            n = steps if steps is not None else len(ips) + warmup
            make_run(tmp_path / side, f"{side}-{i}", device="cpu", throughput_median=float(np.median(ips)),
                     steps=n, config={"timing_warmup": warmup, "compile": False},
                     metrics=_step_log(ips, warmup_ips=[1.0] * warmup), **over)
        dirs.append(str(tmp_path / side))
    res = CliRunner().invoke(main, ["report", "--compare", *dirs, "--format", "json"])
    assert res.exit_code == 0, res.output
    confs = json.loads(res.stdout)["configurations"]
    return confs


def test_equal_distributions_are_no_regression(tmp_path):
    rng = np.random.default_rng(1)
    (row,) = _planted(tmp_path, rng.normal(100, 5, 200), rng.normal(100, 5, 200))
    assert row["verdict"] == "ok" and not row["regression"] and not row["inconclusive"]
    assert row["samples_kind"] == "steps" and row["base_samples"] == 200 and row["new_samples"] == 200
    assert row["change_low_pct"] < 0 < row["change_high_pct"] and row["change_low_pct"] > -5


def test_twenty_percent_shift_tight_spread_is_a_regression(tmp_path):
    rng = np.random.default_rng(2)
    (row,) = _planted(tmp_path, rng.normal(100, 1, 100), rng.normal(80, 1, 100))
    assert row["regression"] and row["verdict"].startswith("REGRESSION (throughput -20")
    assert -22 < row["change_low_pct"] <= row["throughput_change_pct"] <= row["change_high_pct"] < -18
    # the warm-up steps (planted at 1 img/s) are left out of the samples and the medians
    assert 99 < row["base_throughput"] < 101 and 79 < row["new_throughput"] < 81


def test_twenty_percent_shift_huge_spread_is_inconclusive(tmp_path):
    rng = np.random.default_rng(3)
    base = np.abs(rng.normal(100, 60, 20)) + 1
    new = np.abs(rng.normal(80, 60, 20)) + 1
    (row,) = _planted(tmp_path, base, new)
    assert not row["regression"] and row["inconclusive"]
    assert row["change_low_pct"] < -5 < row["change_high_pct"]
    assert row["verdict"].startswith("inconclusive (throughput") and "straddles -5%" in row["verdict"]
    res = CliRunner().invoke(main, ["report", "--compare", str(tmp_path / "base"), str(tmp_path / "new"),
                                    "--check"])
    assert res.exit_code == 0 and "1 inconclusive" in res.stdout  # inconclusive never fails --check


def test_interval_is_deterministic_and_pools_runs():
    rng = np.random.default_rng(4)
    base = [rng.normal(100, 3, 50) for _ in range(3)]
    new = [rng.normal(90, 3, 50) for _ in range(2)]
    a = compare_mod.ratio_interval(base, new)
    assert a == compare_mod.ratio_interval(base, new)  # seeded
    ratio, lo, hi = a
    assert abs(ratio - np.median(np.concatenate(new)) / np.median(np.concatenate(base))) < 1e-12
    assert lo < 0.9 < hi and hi < 0.95


def test_pooled_runs_on_each_side(tmp_path):
    rng = np.random.default_rng(5)
    base = [rng.normal(100, 2, 40) for _ in range(3)]
    new = [rng.normal(80, 2, 40) for _ in range(2)]
    (row,) = _planted(tmp_path, base, new)
    assert row["base_runs"] == 3 and row["new_runs"] == 2
    assert row["base_samples"] == 120 and row["new_samples"] == 80 and row["regression"]


def test_runs_of_different_length_are_not_comparable(tmp_path):
    rng = np.random.default_rng(6)
    confs = _planted(tmp_path, rng.normal(100, 1, 7), rng.normal(85, 1, 19), base_steps=12, new_steps=24)
    (row,) = confs
    assert row["verdict"] == "not comparable (steps 12 vs 24)" and not row["regression"]
    res = CliRunner().invoke(main, ["report", "--compare", str(tmp_path / "base"), str(tmp_path / "new")])
    assert "not comparable (steps 12 vs 24)" in res.stdout and "0 regression(s)" in res.stdout


def test_match_key_separates_amp_dtype_input_size_compile_and_classes(tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    make_run(base, "a", device="cuda", throughput_median=100.0, amp_dtype="float16")
    make_run(new, "a", device="cuda", throughput_median=50.0, amp_dtype="bfloat16")
    make_run(base, "b", device="sdaa", throughput_median=100.0, input_size=112)
    make_run(new, "b", device="sdaa", throughput_median=50.0, input_size=224)
    make_run(base, "c", device="cpu", throughput_median=100.0, config={"compile": False})
    make_run(new, "c", device="cpu", throughput_median=50.0, config={"compile": True})
    make_run(base, "d", device="xpu", throughput_median=100.0, num_classes=1000)
    make_run(new, "d", device="xpu", throughput_median=50.0, num_classes=93431)
    res = CliRunner().invoke(main, ["report", "--compare", str(base), str(new), "--format", "json"])
    body = json.loads(res.stdout)
    assert body["regressions"] == 0
    assert sorted(r["verdict"] for r in body["configurations"]) == ["only in base"] * 4 + ["only in new"] * 4


def test_per_step_samples_respect_resumed_segments(tmp_path):
    """Each process that opens the log starts a segment whose first warm-up steps are not timed."""
    from arcbench.reports.curves import timed_step_throughputs
    from arcbench.reports.dllog import parse_lines

    text = _step_log([50.0] * 4, warmup_ips=[1.0, 1.0]) + _step_log([60.0] * 3, warmup_ips=[2.0, 2.0], start=6)
    ips = timed_step_throughputs(parse_lines(text.splitlines()), warmup=2)
    assert ips.tolist() == [50.0] * 4 + [60.0] * 3


def test_compare_table_fits_the_terminal(tmp_path):
    rng = np.random.default_rng(7)
    _planted(tmp_path, rng.normal(100, 1, 50), rng.normal(80, 1, 50))
    for width in (100, 240):
        res = CliRunner().invoke(main, ["report", "--compare", str(tmp_path / "base"), str(tmp_path / "new")],
                                 env={"COLUMNS": str(width)})
        assert res.exit_code == 0, res.output
        assert max(len(line) for line in res.stdout.splitlines()) <= width
        assert "REGRESSION" in res.stdout and "95% interval" in res.stdout
    assert "REGRESSION (throughput -19.9% [-20.2%, -19.5%])" in res.stdout  # the full verdict when there is room
