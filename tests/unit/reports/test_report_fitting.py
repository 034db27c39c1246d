"""Fitted tables keep what tells the rows apart: differing columns and the figures the rows were
made for stay, columns equal on every row fold into one line, run ids keep their mode."""
from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from report_fixtures import make_run  # noqa: E402

from arcbench.cli import main  # noqa: E402
from arcbench.reports import fit  # noqa: E402

BENCH = dict(mode="bench", synthetic=True, train_set="synthetic", eval_set=None, lfw_accuracy=None,
             lfw_accuracy_std=None, best_lfw_accuracy=None, batch_size=16, per_process_batch=16,
             config={"mode": "bench", "train_data": "synthetic", "val_data": None, "batch_size": 16})
FP32_ID = "20261205-212029-bench-mobilefacenet-cpu-6971"
AMP_ID = "20261205-212114-bench-mobilefacenet-cpu-1f0e"


@pytest.fixture
def bench_pair(tmp_path):
    """What `arcbench bench --device cpu --precision fp32,amp --batch-size 16 --steps 10` records."""
    root = tmp_path / "runs"
    make_run(root, FP32_ID, precision="fp32", amp=False, throughput_median=6.1, date="2026-12-05T21:20:29",
             **BENCH)
    make_run(root, AMP_ID, precision="amp", amp=True, throughput_median=4.0, amp_speedup=0.66,
             date="2026-12-05T21:21:14", **BENCH)
    return root


def report(*args, width):
    res = CliRunner().invoke(main, ["report", *map(str, args)], env={"COLUMNS": str(width)})
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_bench_pair_shows_precision_and_amp_speedup(bench_pair, width):
    out = report(bench_pair, width=width)
    lines = out.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= width, out
    header = lines[0].split()
    assert header[:1] == ["run_id"] and "prec" in header and "img/s" in header and "amp" in header, out
    fp32_row = next(line for line in lines if "6971" in line)
    amp_row = next(line for line in lines if "1f0e" in line)
    assert "fp32" in fp32_row and " amp " in amp_row and "0.66x" in amp_row
    assert "-bench-" in fp32_row and "-bench-" in amp_row  # the id is never cut through its mode
    folded = " ".join(lines[3:])
    assert "all rows:" in folded
    for value in ("completed", "cpu", "mobilefacenet", "synthetic", "batch 16", "procs 1"):
        assert value in folded, (value, out)
    assert "status" not in header and "device" not in header and "backbone" not in header


def test_global_batch_never_shows_without_its_process_count(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "one", nproc=1, batch_size=64, throughput_median=50.0, scaling_efficiency=1.0, **{
        k: v for k, v in BENCH.items() if k not in ("batch_size",)})
    make_run(root, "four", nproc=4, batch_size=256, throughput_median=180.0, scaling_efficiency=0.9, **{
        k: v for k, v in BENCH.items() if k not in ("batch_size",)})
    for width in (60, 80, 120):
        header = report(root, width=width).splitlines()[0].split()
        assert ("batch" in header) == ("procs" in header), (width, header)
    header = report(root, width=120).splitlines()[0].split()
    assert "batch" in header and "procs" in header and "scaling_efficiency" in header


def test_run_ids_are_cut_from_the_date_end():
    rid = "20261205-212029-bench-mobilefacenet-cpu-6971"
    assert fit.shorten_run_id(rid, 100) == rid
    assert fit.shorten_run_id(rid, 36) == "\u2026" + rid[-35:]
    short = fit.shorten_run_id(rid, 29)
    assert short == "\u2026bench-mobilefacenet-cpu-6971"
    tight = fit.shorten_run_id(rid, 16)
    assert len(tight) == 16 and tight.startswith("\u2026bench-") and tight.endswith("71")
    assert fit.shorten_run_id("my-own-run-name-that-is-long", 12) == "my-own\u2026-long"


@pytest.mark.parametrize("command", ["heads", "devices", "plugins"])
def test_info_tables_fit_the_terminal(command):
    res = CliRunner().invoke(main, [command], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 80, res.stdout
    assert lines[0].split()[0] == "name"
