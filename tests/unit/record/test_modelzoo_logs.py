"""`arcbench report --import-log / --align / --compare` read the SDAA model zoo's own logs.

The logs are produced by the real tcap_dllogger from ``../shared/thirdparty``, driven as the
model zoo's ArcFace script drives it (``modelzoo_logger.py``), with its stdout and tqdm's
stderr in one ``| tee`` file beside the library's JSON file.  Skipped, saying so, when the
library is missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from arcbench.cli import main

HERE = Path(__file__).resolve().parents[2]  # tests/
THIRDPARTY = HERE.parent.parent / "shared" / "thirdparty"

pytestmark = pytest.mark.skipif(not (THIRDPARTY / "tcap_dllogger" / "__init__.py").is_file(),
                                reason=f"the real tcap_dllogger is not at {THIRDPARTY}")

EPOCHS, ITERS = 3, 12
PASSING = [(0.95117, 0.01203), (0.97650, 0.00811), (0.98483, 0.00612)]
FAILING = [(0.90117, 0.01203), (0.95650, 0.00811), (0.96900, 0.00700)]


def modelzoo_logs(folder: Path, lfw, name="train_sdaa") -> tuple:
    """(stdout log, JSON log) of one model-zoo style training run."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, log_path = folder / "dlloger_example.json", folder / f"{name}.log"
    env = dict(os.environ, PYTHONPATH=str(THIRDPARTY), WORLD_SIZE="1")
    spec = {"epochs": EPOCHS, "iters": ITERS, "lfw": lfw, "seed": 1}
    with open(log_path, "wb") as out:  # `python train.py ... 2>&1 | tee train.log`
        subprocess.run([sys.executable, str(HERE / "standins" / "modelzoo_logger.py"), str(json_path), json.dumps(spec)],
                       stdout=out, stderr=subprocess.STDOUT, env=env, check=True, timeout=120)
    return log_path, json_path


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("modelzoo")
    return {"pass": modelzoo_logs(root / "pass", PASSING), "fail": modelzoo_logs(root / "fail", FAILING)}


def test_the_generated_logs_look_like_the_model_zoos(logs):
    log, js = logs["pass"]
    text = log.read_text()
    assert "TCAPPDLL" in text and "tensor(" in text and "device='sdaa:0'" in text
    assert "LFW_Accuracy: 0.98483+-0.00612" in text and "Total Loss: " in text and "Epoch 1/3" in text  # tqdm
    first_log = next(line for line in js.read_text().splitlines() if '"type": "LOG"' in line)
    rec = json.loads(first_log[len("TCAPPDLL "):])
    assert isinstance(rec["data"], str) and "'total_losss': \"tensor(" in rec["data"] and rec["step"] == [0, 0]


def test_stdout_log_imports_loss_accuracy_and_throughput(logs):
    from arcbench.reports.curves import SERIES_RUNNING_MEAN
    from arcbench.reports.importlog import import_log

    log, js = logs["pass"]
    imp = import_log(log, {"backbone": "mobilefacenet"})
    assert not imp.parsed.bad and imp.parsed.other > 0  # tqdm and prints are skipped, not errors
    row = imp.row
    assert row["lfw_accuracy"] == pytest.approx(0.98483) and row["lfw_accuracy_std"] == pytest.approx(0.00612)
    assert row["best_lfw_accuracy"] == pytest.approx(0.98483) and list(imp.accuracy["epoch"]) == [0, 1, 2]
    assert list(imp.accuracy["accuracy"]) == pytest.approx([a for a, _ in PASSING])
    # the final loss: the last running mean of the last epoch, i.e. its "Total Loss"
    last_total = float([line for line in log.read_text().splitlines() if line.startswith("Total Loss:")][-1]
                       .split(":")[1])
    assert row["final_loss"] == pytest.approx(last_total, abs=1e-4)
    assert row["loss_series"] == SERIES_RUNNING_MEAN and imp.loss.attrs["series"] == SERIES_RUNNING_MEAN
    assert len(imp.loss) == EPOCHS * ITERS  # validation records are not training loss
    assert row["throughput_median"] > 0 and row["device"] == "sdaa" and row["steps"] == EPOCHS * ITERS
    # the JSON twin has the same loss curve and throughput, and no LFW accuracy (it is printed only)
    twin = import_log(js, {"backbone": "mobilefacenet"})
    assert not twin.parsed.bad and twin.row["final_loss"] == pytest.approx(row["final_loss"])
    assert list(twin.loss["loss"]) == pytest.approx(list(imp.loss["loss"]))
    assert twin.row["throughput_median"] == pytest.approx(row["throughput_median"], rel=1e-4)
    assert twin.row.get("lfw_accuracy") is None


def _report(*args):
    result = CliRunner().invoke(main, ["report", *args])
    return result


@pytest.mark.parametrize("which, verdict", [("pass", "PASS"), ("fail", "FAIL")])
def test_imported_row_is_checked_against_98_48(logs, which, verdict):
    log, _ = logs[which]
    result = _report("--import-log", str(log), "--import-meta", "backbone=mobilefacenet", "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["runs"]
    assert row["reference"] == 98.48 and row["reference_check"] == verdict
    assert row["lfw_accuracy"] == pytest.approx(PASSING[-1][0] if which == "pass" else FAILING[-1][0])
    # without the backbone the log does not say which figure applies
    bare = json.loads(_report("--import-log", str(log), "--format", "json").output)["runs"][0]
    assert bare["reference_check"] == "no reference"


def test_align_stdout_log_against_its_json_twin(logs, tmp_path):
    log, js = logs["pass"]
    result = _report("--align", str(log), str(js), "--format", "json", "--plot", str(tmp_path / "a.png"))
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["verdict"] == "PASS" and d["aligned_on"] == "step" and d["steps"] == EPOCHS * ITERS
    assert d["mean_absolute_error"] == 0.0
    assert "running mean" in d["loss_series"] and d["loss_series_note"] is None
    text = _report("--align", str(log), str(js), "--plot", str(tmp_path / "b.png")).output
    assert "loss series compared: running mean of the epoch's training loss (total_losss)" in text


def test_a_per_step_loss_is_aligned_with_a_running_mean_as_a_running_mean(logs):
    from arcbench.reports.align import align
    from arcbench.reports.curves import SERIES_PER_STEP
    from arcbench.reports.importlog import import_log

    zoo = import_log(logs["pass"][1]).loss
    # a run logging per-step losses whose running mean is the model zoo's curve
    per_step = zoo.copy()
    for e, g in zoo.groupby("epoch"):
        means = g["loss"].to_numpy()
        k = range(1, len(means) + 1)
        per_step.loc[g.index, "loss"] = [m * i - (means[i - 2] * (i - 1) if i > 1 else 0) for m, i in zip(means, k)]
    per_step.attrs["series"] = SERIES_PER_STEP
    r = align(per_step, zoo, "arcbench", "modelzoo")
    assert r.passed and r.mae < 1e-9 and "running mean" in r.series and "RUN_A" in r.series_note
    raw = align(per_step.assign(loss=per_step["loss"]), zoo.assign(loss=zoo["loss"]))  # attrs kept by assign
    assert raw.series == r.series


def test_compare_reads_model_zoo_logs(logs):
    result = _report("--compare", str(logs["pass"][0]), str(logs["fail"][0]), "--import-meta",
                     "backbone=mobilefacenet", "--format", "json")
    assert result.exit_code == 0, result.output
    (conf,) = json.loads(result.output)["configurations"]
    assert conf["base_runs"] == conf["new_runs"] == 1 and conf["device"] == "sdaa"
    assert conf["accuracy_change_points"] == pytest.approx((FAILING[-1][0] - PASSING[-1][0]) * 100)
    assert conf["regression"] and "REGRESSION" in conf["verdict"]
    assert conf["base_throughput"] > 0 and conf["new_throughput"] > 0
