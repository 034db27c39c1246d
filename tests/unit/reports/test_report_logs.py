"""DLLL / TCAPPDLL log parsing and `arcbench report --import-log`."""
from __future__ import annotations

import json
import os
import sys

import pytest
from click.testing import CliRunner

from report_fixtures import make_run  # noqa: E402

from arcbench.cli import main  # noqa: E402
from arcbench.reports import load_runs  # noqa: E402
from arcbench.reports.dllog import parse_lines  # noqa: E402
from arcbench.reports.importlog import import_log  # noqa: E402


def tcap_json_lines(n=10, loss0=5.0, ips=300.0):
    """tcap_dllogger JSONStreamBackend output: data is str() of a dict of str() values."""
    info = {"local_rank": 0, "type": "INFO", "datetime": "2024-11-29 12:00:00",
            "data": {"model_name": "arcface", "batch_size": 96, "device": "sdaa", "use_amp": "True",
                     "distributed": "True", "nproc_per_node": 3, "train_data_path": "datasets",
                     "val_data_path": "lfw", "epoch": 50}}
    out = ["INFO " + json.dumps(info),
           "TCAPPDLL " + json.dumps({"timestamp": "1732880000.0", "type": "METADATA", "metric": "train.loss",
                                     "metadata": {"unit": "", "GOAL": "MINIMIZE"}})]
    for i in range(n):
        data = {"rank": "0", "train.loss": str(loss0 - 0.1 * i), "train.ips": str(ips)}
        out.append("TCAPPDLL " + json.dumps({"timestamp": str(1732880000.0 + i), "datetime": "x",
                                             "elapsedtime": str(i), "type": "LOG", "step": [i // 5, i % 5],
                                             "data": str(data)}))
    out.append("TCAPPDLL " + json.dumps({"type": "LOG", "step": [1], "data": str({"val.lfw.accuracy": "98.60"})}))
    return out


def test_dlll_records_metadata_and_tolerated_steps():
    lines = [
        'DLLL {"type": "METADATA", "metric": "train.loss", "metadata": {"unit": "", "format": ":.4f"}}',
        'DLLL {"type": "LOG", "step": "PARAMETER", "data": {"lr": 0.1, "batch_size": 96}}',
        'DLLL {"timestamp": "1.5", "type": "LOG", "step": [0, 1], "data": {"train.loss": 9.87, "train.total_ips": 120.5}}',
        'DLLL {"type": "LOG", "step": [0], "data": {"val.lfw.accuracy": 0.9, "val.lfw.accuracy_std": 0.01}}',
        'DLLL {"type": "LOG", "step": [], "data": {"train.total_ips": 120.5}}',
        'garbage that is not a log line',
        'DLLL {"type": "LOG", "step": [0, 2], "data": {"train.lo',
    ]
    p = parse_lines(lines)
    assert p.metadata["train.loss"]["format"] == ":.4f"
    assert p.params == {"lr": 0.1, "batch_size": 96}
    assert (p.records[1].kind, p.records[1].step) == ("PARAMETER", "PARAMETER")
    assert [r.step for r in p.logs] == [(0, 1), (0,), ()]
    assert p.logs[0].timestamp == 1.5
    assert p.other == 1 and [b[0] for b in p.bad] == [7]


def test_tcappdll_python_repr_data_and_stdout_form():
    p = parse_lines(tcap_json_lines(3) + [
        "TCAPPDLL 2024-11-29 12:00:01.5 - Epoch: 2 Iteration: 7  rank : 0  train.loss : 1.25  train.ips : 88.5 imgs/s",
        "INFO - 2024-11-29 12:00:02,1 - base_task - TCAPPDLL 2024-11-29 - Epoch: 2 Iteration: 8  train.loss : 1.5e-1",
    ])
    logs = p.logs
    assert logs[0].data == {"rank": 0, "train.loss": 5.0, "train.ips": 300.0}  # strings became numbers
    assert p.params["device"] == "sdaa" and p.params["nproc_per_node"] == 3
    assert (logs[-2].step, logs[-2].data["train.loss"], logs[-2].data["train.ips"]) == ((2, 7), 1.25, 88.5)
    assert (logs[-1].step, logs[-1].data["train.loss"]) == ((2, 8), 0.15)
    assert not p.bad
    # a tensor logged through tcap_dllogger arrives as its str()
    t = parse_lines(["TCAPPDLL " + json.dumps({"type": "LOG", "step": [0, 1], "data": str(
        {"train.loss": "tensor(2.3125, device='sdaa:0', grad_fn=<NllLossBackward0>)"})})])
    assert t.logs[0].data["train.loss"] == 2.3125


def test_malicious_data_string_is_refused_not_executed(tmp_path):
    marker = tmp_path / "PWNED"
    evil = "__import__('os').system('touch %s')" % marker
    lines = tcap_json_lines(3) + ["TCAPPDLL " + json.dumps({"type": "LOG", "step": [0, 9], "data": evil}),
                                  "TCAPPDLL " + json.dumps({"type": "LOG", "step": [0, 8],
                                                            "data": "{'train.loss': open('/etc/passwd').read()}"})]
    p = parse_lines(lines)
    assert not marker.exists()
    assert len(p.bad) == 2 and all("refused" in why for _line, why in p.bad)
    assert len(p.logs) == 4  # the good ones survive
    log = tmp_path / "evil.json"
    log.write_text("\n".join(lines) + "\n")
    imp = import_log(log)
    assert not marker.exists() and imp.row["bad_log_lines"] == 2


def test_import_log_row_and_curves(tmp_path):
    log = tmp_path / "train_sdaa_3rd.json"
    log.write_text("\n".join(tcap_json_lines(10)) + "\n")
    imp = import_log(log, {"backbone": "mobilefacenet"})
    row = imp.row
    assert (row["device"], row["precision"], row["nproc"], row["batch_size"]) == ("sdaa", "amp", 3, 96)
    assert (row["train_set"], row["eval_set"], row["head"]) == ("CASIA-WebFace", "LFW", "arcface")
    assert row["throughput_median"] == 300.0 and row["lfw_accuracy"] == pytest.approx(0.986)
    assert list(imp.loss["loss"]) == pytest.approx([5.0 - 0.1 * i for i in range(10)])


def test_cli_import_log_sits_beside_runs_and_materialises(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "arcbench-run", device="sdaa", lfw_accuracy=0.985)
    log = tmp_path / "train_sdaa.json"
    log.write_text("\n".join(tcap_json_lines(10)) + "\n")
    stdout_log = tmp_path / "cuda_stdout.log"
    stdout_log.write_text("".join(
        f"TCAPPDLL 2024-11-29 - Epoch: {i // 5} Iteration: {i % 5}  rank : 0  train.loss : {5 - 0.1 * i}\n"
        for i in range(10)))
    runner = CliRunner()
    res = runner.invoke(main, ["report", str(runs), "--import-log", str(log), "--import-log", str(stdout_log),
                               "--import-meta", "backbone=mobilefacenet", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["run_id"]: r for r in json.loads(res.stdout)["runs"]}
    assert set(rows) == {"arcbench-run", "import-train_sdaa", "import-cuda_stdout"}
    assert rows["import-train_sdaa"]["reference_check"] == "PASS"  # 98.60 vs the SDAA 98.48
    assert rows["import-cuda_stdout"]["device"] == "cuda"  # guessed from the file name only

    res = runner.invoke(main, ["report", str(runs), "--import-log", str(log), "--import-to", str(runs),
                               "--import-meta", "backbone=mobilefacenet"])
    assert res.exit_code == 0, res.output
    run_dir = runs / "import-train_sdaa"
    assert {"config.json", "summary.json", "metrics.jsonl"} <= set(os.listdir(run_dir))
    df = load_runs(runs)  # a later report sees it without the log
    row = df[df["run_id"] == "import-train_sdaa"].iloc[0]
    assert row["reference_check"] == "PASS" and row["device"] == "sdaa" and row["nproc"] == 3
    # importing again refuses to overwrite: a one-line error, exit 2
    res = runner.invoke(main, ["report", str(runs), "--import-log", str(log), "--import-to", str(runs)])
    assert res.exit_code == 2 and "already exists" in res.stderr


def test_import_of_a_file_without_records_is_an_error(tmp_path):
    log = tmp_path / "empty.log"
    log.write_text("just some output\n")
    res = CliRunner().invoke(main, ["report", "--import-log", str(log)])
    assert res.exit_code == 2 and "no DLLL/TCAPPDLL records" in res.stderr
