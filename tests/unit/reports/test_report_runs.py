"""Loading run dirs into the report frame, and the reference verdicts."""
from __future__ import annotations

import os
import sys

import pytest

from report_fixtures import make_run, metrics_lines  # noqa: E402

from arcbench.errors import ArcbenchError  # noqa: E402
from arcbench.reports import (COLUMNS, ReportWarning, canonical_backbone, canonical_dataset,  # noqa: E402
                              load_accuracy_curve, load_loss_curve, load_references, load_runs, match)


def _by_id(df):
    return {r["run_id"]: r for r in df.to_dict("records")}


def test_verdicts_for_the_four_kinds_of_run(tmp_path):
    make_run(tmp_path, "pass", lfw_accuracy=0.9850, device="sdaa")
    make_run(tmp_path, "fail", lfw_accuracy=0.9700, device="sdaa")
    make_run(tmp_path, "synth", lfw_accuracy=0.60, synthetic=True, train_set="synthetic-faces",
             eval_set="synthetic-faces")
    make_run(tmp_path, "noref", lfw_accuracy=0.99, backbone="ghostfacenet")
    make_run(tmp_path, "bench", lfw_accuracy=None, mode="bench")
    df = load_runs(tmp_path)
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    runs = _by_id(df)
    assert runs["pass"]["reference_check"] == "PASS" and runs["pass"]["reference"] == pytest.approx(98.48)
    assert runs["fail"]["reference_check"] == "FAIL"
    assert runs["synth"]["reference_check"] == "n/a (synthetic)" and runs["synth"]["reference"] != runs["synth"]["reference"]
    assert runs["noref"]["reference_check"] == "no reference"
    assert runs["bench"]["reference_check"] == "n/a (no accuracy)"


def test_tolerance_edge_and_custom_tolerance(tmp_path):
    make_run(tmp_path, "edge", lfw_accuracy=0.9798)  # exactly 98.48 - 0.5
    assert load_runs(tmp_path)["reference_check"][0] == "PASS"
    assert load_runs(tmp_path, tolerance=0.4)["reference_check"][0] == "FAIL"


def test_device_preference_between_matching_references(tmp_path):
    refs = load_references()
    assert match(refs, "mobilefacenet", "CASIA-WebFace", "LFW", "sdaa")["accuracy"] == 98.48
    # no row for cuda: the first listed (the SDAA figure) applies
    assert match(refs, "mobilefacenet", "casia_webface", "lfw.bin", "cuda")["accuracy"] == 98.48
    assert match(refs, "r50", "ms1m-retinaface-t1", "LFW", "cuda")["accuracy"] == 99.83
    assert match(refs, "iresnet50", "webface", "LFW", None)["accuracy"] == 98.93
    # unknown train set: iresnet50 has CASIA and MS1MV3 figures, so no guess
    assert match(refs, "iresnet50", None, "LFW", None) is None
    assert match(refs, "mobilefacenet", None, "LFW", None)["accuracy"] == 98.48


def test_name_normalisation():
    for alias in ("casia", "CASIA-WebFace", "casia_webface", "WebFace", "faces_webface_112x112", "datasets",
                  "/data/datasets/"):
        assert canonical_dataset(alias) == "CASIA-WebFace"
    assert canonical_dataset("MS1M-RetinaFace-T1") == canonical_dataset("ms1mv3") == "MS1MV3"
    assert canonical_dataset("lfw.bin") == canonical_dataset("LFW") == "LFW"
    assert canonical_dataset("synthetic-faces") == "synthetic-faces"
    assert canonical_backbone("MobileNet_V1") == "mobilenetv1"
    assert canonical_backbone("r100") == canonical_backbone("iresnet-100") == "iresnet100"


def test_seed_folder_names_in_config_resolve_to_casia_and_lfw(tmp_path):
    # no summary.train_set: the config's seed-style paths are used and normalised
    make_run(tmp_path, "cfg", summary={"train_set": None, "eval_set": None}, lfw_accuracy=0.985,
             config={"train_data": "/data/datasets", "val_data": "lfw"})
    row = load_runs(tmp_path).iloc[0]
    assert (row["train_set"], row["eval_set"], row["train_set_raw"]) == ("CASIA-WebFace", "LFW", "datasets")
    assert row["reference_check"] == "PASS"


def test_partial_run_without_summary_and_truncated_log(tmp_path):
    losses = [5.0 - 0.1 * i for i in range(12)]
    text = metrics_lines(losses, acc=[0.9, 0.95]) + 'DLLL {"type": "LOG", "step": [9, 1], "da'
    make_run(tmp_path, "partial", write_summary=False, metrics=text)
    problems = []
    df = load_runs(tmp_path, problems=problems)
    row = df.iloc[0]
    assert row["status"] == "running"
    assert row["throughput_median"] == pytest.approx(101.0)
    assert row["lfw_accuracy"] == pytest.approx(0.95)
    assert row["steps"] == 12 and row["bad_log_lines"] == 1
    assert row["reference_check"] == "n/a (running)"
    assert any("metrics.jsonl" in p and "1 unreadable" in p for p in problems)


def test_unreadable_summary_warns_and_is_skipped(tmp_path):
    make_run(tmp_path, "good")
    make_run(tmp_path, "broken", raw_summary='{"run_id": "broken", "status": "comp')
    with pytest.warns(ReportWarning, match=r"broken.summary\.json:1: not valid JSON.*skipped"):
        df = load_runs(tmp_path)
    assert list(df["run_id"]) == ["good"]


def test_empty_config_only_dir_and_nested_roots(tmp_path):
    os.makedirs(tmp_path / "group" / "a")
    (tmp_path / "group" / "a" / "config.json").write_text('{"run_id": "a", "device": "cpu"}')
    make_run(tmp_path / "group", "b")
    df = load_runs([tmp_path, tmp_path / "group" / "b"])  # the same run twice: counted once
    runs = _by_id(df)
    assert set(runs) == {"a", "b"}
    assert runs["a"]["status"] == "unknown"
    # pointing straight at a run dir works too
    assert list(load_runs(tmp_path / "group" / "b")["run_id"]) == ["b"]


def test_missing_runs_dir_is_an_arcbench_error(tmp_path):
    with pytest.raises(ArcbenchError, match="runs directory not found"):
        load_runs(tmp_path / "nope")


def test_loss_and_accuracy_curves(tmp_path):
    losses = [4.0, 3.0, 2.5, 2.0, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3]
    d = make_run(tmp_path, "r", metrics=metrics_lines(losses, iters_per_epoch=5, acc=[0.9, 0.95]))
    loss = load_loss_curve(d)
    assert list(loss.columns) == ["step", "epoch", "iteration", "loss"]
    assert list(loss["loss"]) == losses
    assert list(zip(loss["epoch"], loss["iteration"]))[5] == (1, 0)
    acc = load_accuracy_curve(d)
    assert list(acc["epoch"]) == [0, 1] and list(acc["accuracy"]) == [0.9, 0.95]
    assert acc["accuracy_std"].iloc[0] == pytest.approx(0.005)


def test_percent_accuracy_is_read_as_a_fraction(tmp_path):
    make_run(tmp_path, "pct", lfw_accuracy=98.6)
    row = load_runs(tmp_path).iloc[0]
    assert row["lfw_accuracy"] == pytest.approx(0.986) and row["reference_check"] == "PASS"


def test_bad_reference_table_names_the_line(tmp_path):
    p = tmp_path / "refs.csv"
    p.write_text("backbone,train_set,eval_set,accuracy\nmobilefacenet,CASIA-WebFace,LFW,98.48\nx,y,z,lots\n")
    with pytest.raises(ArcbenchError) as err:
        load_references(p)
    assert f"{p}:3:" in str(err.value) and "not a number" in str(err.value)


def test_odd_value_types_do_not_crash(tmp_path):
    make_run(tmp_path, "odd", date=20241129, synthetic="false", throughput_median="fast", nproc="2",
             device={"name": "sdaa"}, lfw_accuracy="0.985", amp="yes", precision=None)
    make_run(tmp_path, "normal")
    df = load_runs(tmp_path)
    row = _by_id(df)["odd"]
    assert row["synthetic"] is False or row["synthetic"] == False  # noqa: E712 - a pandas boolean
    assert row["throughput_median"] != row["throughput_median"]  # NaN, not a crash
    assert row["nproc"] == 2 and row["precision"] == "amp" and row["date"] == "20241129"
    assert row["lfw_accuracy"] == pytest.approx(0.985)
