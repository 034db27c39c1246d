"""`arcbench bench --mode data`: the input pipeline alone, and the feed ratio beside training."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from arcbench.cli import main
from arcbench.data import synth
from arcbench.bench.feed import feed_ratios, feed_words


@pytest.fixture(autouse=True)
def _plugin(tiny, monkeypatch):
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchdata") / "faces"
    synth.generate(out, identities=4, images_per_identity=6, verify_identities=0, pairs=0, workers=0)
    return out / "train"


def bench(tmp_path, *args, json_out=True, expect=0):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "bench", "--device", "cpu", "--backbone", "tiny",
                                       "--warmup", "1", "--steps", "3", "--out", str(tmp_path / "runs"),
                                       *(["--json"] if json_out else []), *args])
    assert result.exit_code == expect, result.output + repr(result.exception)
    return json.loads(result.output[result.output.index("["):]) if json_out and not expect else result.output


def test_data_and_train_rows_carry_the_feed_ratio(tmp_path, folder):
    rows = bench(tmp_path, "--mode", "data,train", "--data", str(folder), "--precision", "fp32",
                 "--batch-size", "4", "--workers", "0")
    data, train = rows
    assert (data["mode"], train["mode"]) == ("data", "train")
    assert data["status"] == train["status"] == "completed"
    assert data["precision"] is None and data["nproc"] == 1 and data["batch_size"] == 4
    assert data["throughput_median"] > 0 and data["workers"] == 0
    assert data["throughput_per_worker"] == pytest.approx(data["throughput_median"])  # 0 workers: the main process
    assert data["decode_img_s"] > 0
    assert data["decode_ratio"] == pytest.approx(data["throughput_median"] / data["decode_img_s"])
    assert data["mfu"] is None and data["flops_per_image"] is None and data["amp_speedup"] is None
    ratio = data["throughput_median"] / train["throughput_median"]
    assert train["feed_ratio"] == pytest.approx(ratio) and data["feed_ratio"] == pytest.approx(ratio)
    # recorded as a run the report can read, with the ratio
    s = json.loads((tmp_path / "runs" / data["run_id"] / "summary.json").read_text())
    assert s["bench_mode"] == "data" and s["feed_ratio"] == pytest.approx(ratio) and s["workers"] == 0


def test_the_table_has_a_feed_column(tmp_path, folder):
    out = bench(tmp_path, "--mode", "data,train", "--data", str(folder), "--precision", "fp32",
                "--batch-size", "4", "--workers", "0", json_out=False)
    header = next(line for line in out.splitlines() if "img/s" in line)
    assert {"feed", "workers", "img/s/worker", "PIL"} <= set(header.split())


def test_feed_ratio_below_one_is_said_in_words():
    rows = [{"mode": "data", "backbone": "b", "per_process_batch": 64, "data": "d", "throughput_median": 500.0,
             "workers": 2},
            {"mode": "train", "backbone": "b", "per_process_batch": 64, "data": "d", "nproc": 1,
             "precision": "fp32", "throughput_median": 400.0},
            {"mode": "train", "backbone": "b", "per_process_batch": 64, "data": "d", "nproc": 1,
             "precision": "amp", "throughput_median": 1000.0},
            {"mode": "train", "backbone": "b", "per_process_batch": 32, "data": "d", "nproc": 1,
             "precision": "fp32", "throughput_median": 900.0}]
    feed_ratios(rows)
    assert rows[1]["feed_ratio"] == pytest.approx(1.25) and rows[2]["feed_ratio"] == pytest.approx(0.5)
    assert rows[0]["feed_ratio"] == pytest.approx(0.5)  # against the fastest training it must feed
    assert rows[3]["feed_ratio"] is None  # no data row at batch 32
    words = feed_words(rows)
    assert len(words) == 1 and "input pipeline is the bottleneck" in words[0] and "0.50x" in words[0]
    rows[2]["throughput_median"] = 450.0
    feed_ratios(rows)
    assert feed_words(rows) == []


@pytest.mark.parametrize("args, message", [
    (["--mode", "data"], "--mode data measures the input pipeline"),
    (["--mode", "data,fly"], "--mode: unknown 'fly'"),
])
def test_bad_modes_are_one_line_errors(tmp_path, args, message):
    out = bench(tmp_path, *args, json_out=False, expect=2)
    assert message in out and "Traceback" not in out
