"""A report a person can read: a terminal-width table, --columns, where files land, labels, .gitignore."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from report_fixtures import make_run, metrics_lines  # noqa: E402

from arcbench.cli import main  # noqa: E402
from arcbench.reports import render  # noqa: E402

LONG_SET = "synthetic-faces (held-out identities)"


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "20261202-023601-train-mobilefacenet-cpu-ab12", synthetic=True, train_set="synthetic-faces",
             eval_set=LONG_SET, lfw_accuracy=0.899, throughput_median=41.3)
    make_run(root, "sdaa-ok", device="sdaa", lfw_accuracy=0.9850, amp_speedup=1.7, throughput_median=900.0,
             latency_p95=0.123)
    make_run(root, "bench-synthetic", mode="bench", synthetic=True, train_set="synthetic", eval_set=None,
             lfw_accuracy=None, lfw_accuracy_std=None, best_lfw_accuracy=None, throughput_median=55.0,
             config={"mode": "bench", "train_data": "synthetic", "val_data": None})
    return root


def invoke(*args, env=None):
    return CliRunner().invoke(main, ["report", *map(str, args)], env=env or {})


@pytest.mark.parametrize("width", [80, 120, 160])
def test_default_table_fits_the_terminal(runs, width):
    res = invoke(runs, env={"COLUMNS": str(width)})
    assert res.exit_code == 0, res.output
    lines = res.stdout.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= width
    header = lines[0].split()
    assert header[0] == "run_id" and "img/s" in header and "accuracy" in header and "amp" in header
    if width >= 120:
        assert "check" in header
    assert len(lines) >= 4  # header + 3 runs
    assert LONG_SET not in res.stdout  # shortened
    if width >= 160:
        assert "20261202-023601-train-mobilefacenet-cpu-ab12" in res.stdout  # nothing cut when it fits


def test_default_table_is_about_a_dozen_columns_and_names_what_it_hides(runs):
    assert 10 <= len(render.TABLE_COLUMNS) <= 14
    res = invoke(runs, env={"COLUMNS": "80"})
    assert "hidden to fit 80 columns" in res.stdout and "--columns all" in res.stdout
    assert "all rows: " in res.stdout  # what every run shares is said once


def test_long_set_names_are_shortened():
    assert render.short_set_name(LONG_SET) == "synthetic-faces"
    assert render.short_set_name("CASIA-WebFace") == "CASIA-WebFace"
    cut = render.cut("a-long-name-without-a-date-ab12", 14)
    assert len(cut) == 14 and cut.startswith("a-long") and cut.endswith("ab12")


def test_columns_option(runs):
    res = invoke(runs, "--columns", "run_id,latency_p95,amp_speedup", env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["run_id", "latency_p95", "amp", "x"]  # amp_speedup's short header "amp x"
    assert "0.123" in res.stdout and "1.70x" in res.stdout
    res = invoke(runs, "--columns", "all", env={"COLUMNS": "80"})
    for c in ("latency_p99", "final_loss", "train_set_raw", "reference"):
        assert c in res.stdout.splitlines()[0].split()
    res = invoke(runs, "--columns", "run_id,colour")
    assert res.exit_code == 2 and "unknown column(s) colour" in res.stderr and "latency_p95" in res.stderr


def test_csv_and_json_keep_every_column(runs):
    from arcbench.reports.runs import ALL_COLUMNS

    rows = list(csv.DictReader(io.StringIO(invoke(runs, "--format", "csv").stdout)))
    assert set(ALL_COLUMNS) <= set(rows[0]) and any(r["eval_set"] == LONG_SET for r in rows)  # not shortened
    body = json.loads(invoke(runs, "--format", "json").stdout)
    assert set(ALL_COLUMNS) <= set(body["runs"][0])
    only = json.loads(invoke(runs, "--format", "json", "--columns", "run_id,throughput_median").stdout)
    assert set(only["runs"][0]) == {"run_id", "throughput_median"}


def test_bench_run_label_agrees_with_help(runs):
    body = json.loads(invoke(runs, "--format", "json").stdout)
    bench = [r for r in body["runs"] if r["run_id"] == "bench-synthetic"][0]
    assert bench["synthetic"] is True and bench["reference_check"] == "n/a (no accuracy)"
    synth = [r for r in body["runs"] if r["run_id"].startswith("20261202")][0]
    assert synth["reference_check"] == "n/a (synthetic)"  # generated data that did verify
    help_text = CliRunner().invoke(main, ["report", "--help"]).stdout
    line = [ln for ln in help_text.splitlines() if "n/a (no accuracy)" in ln][0]
    assert "bench run" in line


def test_html_goes_to_the_runs_dir_and_prints_the_absolute_path(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("runs", "--format", "html")
    assert res.exit_code == 0, res.output
    path = res.stdout.strip()
    assert os.path.isabs(path) and path == str(runs / "arcbench-report.html") and os.path.isfile(path)
    # --out is honoured, printed absolute
    res = invoke("runs", "--format", "json", "--out", "r.json")
    assert res.stdout.strip() == str(tmp_path / "r.json")
    # no runs dir at all (an imported log only): the current directory
    log = tmp_path / "zoo.log"
    log.write_text(metrics_lines([3.0, 2.0, 1.0]))
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    res = invoke("--import-log", log, "--format", "html")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(empty / "arcbench-report.html")


def test_help_says_where_generated_files_go():
    text = " ".join(CliRunner().invoke(main, ["report", "--help"]).stdout.split())
    assert "RUNS_DIR/arcbench-report.html" in text and "absolute path" in text
    assert "align_<A>_vs_<B>.png in RUNS_DIR" in text


def test_gitignore_covers_what_arcbench_writes_in_its_checkout():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if not os.path.isdir(os.path.join(repo, ".git")):
        pytest.skip("not a git checkout")
    paths = ["runs/20261202-train/summary.json", "arcbench-report.html", "align_a_vs_b.png", "cls_train.txt",
             "demo-runs/x/summary.json", ".venv/bin/python", ".benchmarks/x.json"]
    res = subprocess.run(["git", "-C", repo, "check-ignore", "--no-index", *paths], capture_output=True, text=True)
    assert sorted(res.stdout.split()) == sorted(paths)
