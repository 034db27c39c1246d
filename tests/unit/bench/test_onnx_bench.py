"""`bench --mode eval --engine torch,onnxruntime`: the engine as a grid axis, in rows and in the report."""
from __future__ import annotations

import json

import pytest

from testutil import cli_ok as _ok, cli_one_line_error as _one_line_error, cli_run as _run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)


def test_bench_eval_engine_axis_rows_and_report(tmp_path):
    out = tmp_path / "runs"
    r = _ok(_run("bench", "--mode", "eval", "--engine", "torch,onnxruntime", "--precision", "fp32,amp",
                 "--batch-size", "2", "--warmup", "1", "--steps", "2", "--device", "cpu", "--out", out, "--json"))
    rows = json.loads(r.stdout)
    assert [(row["engine"], row["precision"]) for row in rows] == [("torch", "fp32"), ("torch", "amp"),
                                                                   ("onnxruntime", "fp32")]
    assert all(row["status"] == "completed" and row["throughput_median"] > 0 for row in rows)
    by = {(row["engine"], row["precision"]): row for row in rows}
    # amp speedup pairs torch amp with torch fp32, never with the onnxruntime row
    assert by["torch", "amp"]["amp_speedup"] == pytest.approx(
        by["torch", "amp"]["throughput_median"] / by["torch", "fp32"]["throughput_median"])
    assert by["onnxruntime", "fp32"]["amp_speedup"] is None
    summaries = [json.loads((out / row["run_id"] / "summary.json").read_text()) for row in rows]
    assert sorted(s["engine"] for s in summaries) == ["onnxruntime", "torch", "torch"]
    report = _ok(_run("report", out)).stdout  # the default table
    header = report.splitlines()[0].split()
    assert "engine" in header and "onnxruntime" in report


def test_report_has_no_engine_column_when_runs_agree(tmp_path):
    out = tmp_path / "runs"
    _ok(_run("bench", "--mode", "eval", "--precision", "fp32", "--batch-size", "2", "--warmup", "1", "--steps", "1",
             "--device", "cpu", "--out", out, "--json"))
    report = _ok(_run("report", out)).stdout  # the default table
    assert "engine" not in report.splitlines()[0].split()


def test_bench_engine_is_an_eval_axis_only(tmp_path):
    _one_line_error(_run("bench", "--engine", "torch,onnxruntime", "--device", "cpu", "--out", tmp_path),
                    "--mode eval")
    _one_line_error(_run("bench", "--mode", "eval", "--engine", "tensorrt", "--device", "cpu", "--out", tmp_path),
                    "tensorrt")
    _one_line_error(_run("bench", "--mode", "eval", "--engine", "onnxruntime", "--compile", "--device", "cpu",
                         "--out", tmp_path), "--compile")
    _one_line_error(_run("bench", "--mode", "eval", "--engine", "onnxruntime", "--precision", "amp", "--device", "cpu",
                         "--out", tmp_path), "fp32")
    assert not list(tmp_path.iterdir())  # refused before any run directory is made
