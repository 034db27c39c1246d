"""`arcbench report --compare BASE NEW`: configuration matching and regression flags."""
from __future__ import annotations

import json
import os
import sys

from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
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
