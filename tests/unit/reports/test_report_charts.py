"""Charts compare like with like: runs that differ in what changes throughput are never pooled."""
from __future__ import annotations

import os
import sys

from report_fixtures import make_run  # noqa: E402

from arcbench.reports import charts, load_runs  # noqa: E402


def _unlike_pair(root):
    """The issue's case: a batch-64 training run on image files and a batch-16 compute-only bench run."""
    make_run(root, "train-b64", precision="fp32", amp=False, batch_size=64, throughput_median=52.0,
             synthetic=True, train_set="synthetic-faces", config={"train_data": "/data/faces/train"})
    make_run(root, "bench-b16", mode="bench", precision="fp32", amp=False, batch_size=16,
             throughput_median=44.8, synthetic=True, train_set="synthetic",
             config={"mode": "bench", "train_data": "synthetic", "batch_size": 16})


def test_unlike_runs_are_not_pooled(tmp_path):
    _unlike_pair(tmp_path)
    bars = charts.throughput_bars(load_runs(tmp_path))
    assert sorted(bars["throughput"].tolist()) == [44.8, 52.0]  # not one median of 48.4
    labels = " | ".join(bars["label"])
    assert "batch 64/proc" in labels and "batch 16/proc" in labels
    assert "random tensors" in labels and "generated images" in labels
    assert "cpu" in bars.attrs["common"] and "fp32" in bars.attrs["common"]
    assert charts.throughput_by_device(load_runs(tmp_path))[:8] == b"\x89PNG\r\n\x1a\n"


def test_like_runs_are_pooled_into_one_bar(tmp_path):
    for i, ips in enumerate((40.0, 50.0, 60.0)):
        make_run(tmp_path, f"same-{i}", throughput_median=ips)
    bars = charts.throughput_bars(load_runs(tmp_path))
    assert bars["throughput"].tolist() == [50.0] and bars["runs"].tolist() == [3]


def test_html_report_of_mixed_runs_keeps_them_apart(tmp_path):
    from click.testing import CliRunner

    from arcbench.cli import main

    _unlike_pair(tmp_path / "runs")
    res = CliRunner().invoke(main, ["report", str(tmp_path / "runs"), "--format", "html", "--out",
                                    str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").stat().st_size > 10_000
