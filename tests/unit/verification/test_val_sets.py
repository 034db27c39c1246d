"""Several verification sets in one run: two ``.bin`` files and a folder + pairs set, each verified
at every point, recorded under its own name, and equal to ``arcbench eval`` on that set alone.

Before this, a second ``--val-bin`` silently replaced the first (click kept the last value) and a
``.bin`` could not be combined with a folder set: ``test_two_val_bins_and_a_folder_are_all_recorded``
failed there.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from arcbench.cli import main
from testutil import IMPORT_PATH, free_port, only_run_dir

HERE = Path(__file__).resolve().parents[2]  # tests/
EPOCHS = 2


@pytest.fixture(scope="module")
def vfaces(tmp_path_factory):
    """8 training identities x 6 images; 20 held-out identities with 4 pairs-file folds."""
    from arcbench.data.synth import generate

    root = tmp_path_factory.mktemp("vfaces")
    generate(root, identities=8, images_per_identity=6, verify_identities=20, verify_images=3, pairs=4, workers=0)
    return root


def write_bin(path: Path, folder: Path, pairs_file: Path, keep) -> Path:
    """An insightface-style .bin ``(encoded images, issame)`` from some pairs of the folder set."""
    from arcbench.verification.pairs import load_pairs

    vset = load_pairs(folder, pairs_file)
    images, issame = [], []
    for k in keep(len(vset)):
        a, b = vset.pairs[k]
        images += [Path(vset.images[a]).read_bytes(), Path(vset.images[b]).read_bytes()]
        issame.append(bool(vset.issame[k]))
    path.write_bytes(pickle.dumps((images, issame), protocol=2))
    return path


@pytest.fixture(scope="module")
def bins(vfaces, tmp_path_factory):
    d = tmp_path_factory.mktemp("bins")
    one = write_bin(d / "cfp_fp.bin", vfaces / "verify", vfaces / "pairs.txt", lambda n: range(0, n, 2))
    two = write_bin(d / "agedb_30.bin", vfaces / "verify", vfaces / "pairs.txt", lambda n: range(1, n, 2))
    return d, one, two


def run_args(vfaces, bins, out):
    d, one, two = bins
    return ["run", "--device", "cpu", "--backbone", "tiny", "--workers", "0", "--eval-batch-size", "8",
            "--quiet", "--epochs", str(EPOCHS), "--batch-size", "8",
            "--train-data", str(vfaces / "train"), "--annotation", str(vfaces / "cls_train.txt"),
            "--val-bin", str(one), "--val-bin", str(two),
            "--val-data", str(vfaces / "verify"), "--val-pairs", str(vfaces / "pairs.txt"), "--out", str(out)]


def read_records(rd: Path):
    out = []
    for line in (rd / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line[5:])
        if rec["type"] == "LOG":
            out.append(rec)
    return out


def eval_alone(rd: Path, args) -> dict:
    res = CliRunner().invoke(main, ["--plugin", "tinyplugin", "eval", "--backbone", "tiny", "--device", "cpu",
                                    "--weights", str(rd / "backbone.pth"), "--workers", "0",
                                    "--eval-batch-size", "8", "--json", *args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return json.loads(res.output)


def check_run(rd: Path, vfaces, bins):
    d, one, two = bins
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "completed", s.get("reason")
    names = s["eval_sets"]
    assert len(names) == 3 and {"cfp_fp", "agedb_30"} <= set(names)
    folder_name = [n for n in names if n not in ("cfp_fp", "agedb_30")][0]
    per = s["verification"]
    assert set(per) == set(names)
    # the first set keeps the single-set fields of old reports
    assert s["eval_set"] == names[0] and s["lfw_accuracy"] == per[names[0]]["accuracy"]
    for name in names:
        v = per[name]
        assert 0 <= v["accuracy"] <= 1 and v["best_accuracy"] >= v["accuracy"]
        assert v["seconds"] > 0 and v["pairs_used"] > 0 and len(v["best_thresholds"]) == v["n_folds"]
        assert [e for e, _acc, _std in v["history"]] == list(range(1, EPOCHS + 1))
    # one record per set per verification point, in metrics.jsonl
    recs = read_records(rd)
    for epoch in range(1, EPOCHS + 1):
        at = [r["data"] for r in recs if r["step"] == [epoch] and "val.set" in r["data"]]
        assert sorted(r["val.set"] for r in at) == sorted(names), at
    # each set's figure equals `arcbench eval` of the exported weights on that set alone
    alone = {"cfp_fp": eval_alone(rd, ["--val-bin", str(one)]),
             "agedb_30": eval_alone(rd, ["--val-bin", str(two)]),
             folder_name: eval_alone(rd, ["--val-data", str(vfaces / "verify"),
                                          "--val-pairs", str(vfaces / "pairs.txt")])}
    for name, r in alone.items():
        assert per[name]["accuracy"] == pytest.approx(r["accuracy"], abs=1e-12), name
        assert per[name]["accuracy_std"] == pytest.approx(r["accuracy_std"], abs=1e-12), name
        assert per[name]["pairs_used"] == r["pairs_used"]
    return s


THIRDPARTY = HERE.parent.parent / "shared" / "thirdparty"


@pytest.fixture()
def with_tcap(monkeypatch):
    """The real tcap_dllogger on the path when ../shared/thirdparty has it (never copied here)."""
    had = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "tcap_dllogger"}
    present = (THIRDPARTY / "tcap_dllogger" / "__init__.py").is_file()
    if present:
        monkeypatch.syspath_prepend(str(THIRDPARTY))
        monkeypatch.delenv("ARCBENCH_TCAP_DLLOGGER", raising=False)
    yield present
    for k in [k for k in sys.modules if k.split(".")[0] == "tcap_dllogger"]:
        del sys.modules[k]
    sys.modules.update(had)


def test_two_val_bins_and_a_folder_are_all_recorded(vfaces, bins, tmp_path, monkeypatch, with_tcap):
    monkeypatch.syspath_prepend(str(HERE))
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["--plugin", "tinyplugin", *run_args(vfaces, bins, out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rd = only_run_dir(out)
    s = check_run(rd, vfaces, bins)
    cfg = json.loads((rd / "config.json").read_text())
    assert cfg["val_bin"] == [str(bins[1]), str(bins[2])]
    # the report of the run has one accuracy column per set
    from arcbench.reports.runs import load_runs

    row = load_runs(out).iloc[0]
    assert row["acc:CFP-FP"] == s["verification"]["cfp_fp"]["accuracy"]
    assert row["acc:AgeDB-30"] == s["verification"]["agedb_30"]["accuracy"]
    assert len([c for c in row.index if c.startswith("acc:")]) == 3
    # the tcap log carries the same per-set records when the library is there
    if with_tcap:
        from arcbench.reports.dllog import parse_file

        parsed = parse_file(rd / "metrics.tcap.json")
        assert not parsed.bad, parsed.bad
        for epoch in range(1, EPOCHS + 1):
            at = [r.data for r in parsed.logs if tuple(r.step) == (epoch,) and "val.set" in r.data]
            assert sorted(str(d["val.set"]) for d in at) == sorted(s["eval_sets"]), at
        cfp = [r.data for r in parsed.logs if "val.cfp_fp.accuracy" in r.data]
        assert [d["val.cfp_fp.accuracy"] for d in cfp][-1] == pytest.approx(s["verification"]["cfp_fp"]["accuracy"])


@pytest.mark.slow
def test_three_sets_at_two_processes_equal_eval_alone(vfaces, bins, tmp_path):
    out = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = IMPORT_PATH + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", "arcbench", "--plugin", "tinyplugin",
                        *run_args(vfaces, bins, out), "--nproc", "2", "--master-port", str(free_port())],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout
    check_run(only_run_dir(out), vfaces, bins)


def test_a_folder_of_bins_gives_every_bin_in_name_order(bins, tmp_path):
    from arcbench.config import RunConfig

    d, one, two = bins
    cfg = RunConfig(val_bin=str(d)).validate()
    assert cfg.data.val_bin_files() == [str(two), str(one)]  # agedb_30.bin, cfp_fp.bin
    empty = tmp_path / "empty"
    empty.mkdir()
    from arcbench.errors import ArcbenchError

    with pytest.raises(ArcbenchError, match="no .bin"):
        RunConfig(val_bin=str(empty)).validate()


def test_two_sets_with_one_name_are_refused(bins):
    from arcbench.errors import ArcbenchError
    from arcbench.verification.load import load_verification_sets

    d, one, two = bins
    with pytest.raises(ArcbenchError, match="cfp_fp"):
        load_verification_sets(val_bins=[str(one), str(one)])


def _per_set(**accs):
    return {name: {"accuracy": a, "accuracy_std": 0.004, "best_accuracy": a, "seconds": 1.0}
            for name, a in accs.items()}


def test_report_has_one_column_and_one_check_per_set(tmp_path, monkeypatch):
    from report_fixtures import make_run

    from arcbench.reports.runs import load_runs

    common = dict(backbone="iresnet50", train_set="ms1m-retinaface-t1", device="cuda")
    # 98.96 - 0.5 = 98.46 for CFP-FP, 98.35 - 0.5 = 97.85 for AgeDB-30, 99.83 - 0.5 for LFW
    make_run(tmp_path, "three", eval_set="LFW", lfw_accuracy=0.9981, eval_sets=["LFW", "cfp_fp", "agedb_30"],
             verification=_per_set(LFW=0.9981, cfp_fp=0.9850, agedb_30=0.9700), **common)
    make_run(tmp_path, "two", eval_set="LFW", lfw_accuracy=0.9900, eval_sets=["LFW", "cfp_fp"],
             verification=_per_set(LFW=0.9900, cfp_fp=0.9800), **common)
    make_run(tmp_path, "one", **common)  # an old single-set run at 98.5% LFW: no per-set columns
    df = load_runs(tmp_path).set_index("run_id")
    for col in ("acc:LFW", "acc:CFP-FP", "acc:AgeDB-30"):
        assert col in df.columns and str(df[col].dtype) == "float64"
    assert df.loc["three", "acc:AgeDB-30"] == pytest.approx(0.97)
    assert df.loc["three", "check:LFW"] == "PASS" and df.loc["three", "check:CFP-FP"] == "PASS"
    assert df.loc["three", "check:AgeDB-30"] == "FAIL" and df.loc["three", "ref:AgeDB-30"] == 98.35
    assert df.loc["two", "check:CFP-FP"] == "FAIL" and df.loc["two", "check:AgeDB-30"] == "n/a (no accuracy)"
    assert df.loc["one", "reference_check"] == "FAIL" and df.loc["one", "check:CFP-FP"] == "n/a (no accuracy)"
    # the terminal table shows each set's column and check
    monkeypatch.setenv("COLUMNS", "400")
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    head = [line for line in res.output.splitlines() if "acc:CFP-FP" in line]
    assert head and "acc:AgeDB-30" in head[0] and "check:AgeDB-30" in head[0], res.output
    assert "97.00%" in res.output


def test_a_resumed_run_keeps_every_sets_history(vfaces, bins, tmp_path, tiny):
    """Interrupted in epoch 2 and resumed: each set's history and best-so-far cover the whole run."""
    out = tmp_path / "runs"
    tiny.INTERRUPT_AT = 9  # mid-epoch 2 (6 steps an epoch)
    res = CliRunner().invoke(main, ["--plugin", "tinyplugin", *run_args(vfaces, bins, out)])
    assert res.exit_code == 130, res.output
    tiny.INTERRUPT_AT = None
    rd = only_run_dir(out)
    res = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--resume", str(rd), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "completed" and len(s["verification"]) == 3
    for name, v in s["verification"].items():
        assert [e for e, _a, _s in v["history"]] == [1, 2], name
        assert v["best_accuracy"] == max(a for _e, a, _s in v["history"])
