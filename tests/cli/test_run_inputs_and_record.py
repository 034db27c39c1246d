"""What a user meets around a run: inputs checked before a run dir is made, bad images named,
set names that tell sets apart in every state, summary text without None, the closing hint."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from arcbench.cli import main

HERE = Path(__file__).resolve().parents[1]  # tests/


@pytest.fixture(autouse=True)
def _plugin_path(monkeypatch):
    from arcbench import plugin_manager

    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)
    monkeypatch.delenv(plugin_manager.PLUGIN_MODULES_ENV, raising=False)
    import tinyplugin

    plugin_manager.load_plugin_module("tinyplugin")
    tinyplugin.INTERRUPT_AT = None
    tinyplugin.reset_calls()
    yield
    plugin_manager.unregister_plugin("tinyplugin")


def synth(out, **kw):
    from arcbench.data.synth import generate

    args = dict(identities=4, images_per_identity=4, verify_identities=20, verify_images=2, pairs=1, workers=0)
    args.update(kw)
    generate(out, **args)
    return out


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run(*args):
    return cli("--plugin", "tinyplugin", "run", "--device", "cpu", "--backbone", "tiny", "--workers", "0",
               "--quiet", *args)


def test_a_malformed_pairs_file_leaves_no_run_dir(tmp_path):
    faces = synth(tmp_path / "faces")
    bad = tmp_path / "pairs.txt"
    bad.write_text("10 300\nfoo 1\n")
    res = run("--train-data", faces, "--val-data", faces / "verify", "--val-pairs", bad, "--out", tmp_path / "runs")
    assert res.exit_code == 2, res.output
    assert f"{bad}:2:" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_data_synth_refuses_before_it_makes_its_folder(tmp_path):
    out = tmp_path / "set"
    res = cli("data", "synth", "--out", out, "--identities", "2", "--verify-identities", "20",
              "--verify-images", "2", "--pairs", "50")
    assert res.exit_code == 2 and "pairs per fold" in res.stderr
    assert not out.exists()


def test_generated_sets_are_named_by_their_folder_in_every_state(tmp_path):
    from arcbench.config import RunConfig
    from arcbench.verification.sets import run_set_names

    a, b = synth(tmp_path / "faces-a"), synth(tmp_path / "faces-b", seed=3)
    assert "name" not in json.loads((a / "synth.json").read_text())  # the folder names it
    cfg = RunConfig(train_data=str(a), val_data=str(b / "verify"), val_pairs=str(b / "pairs.txt"))
    assert run_set_names(cfg) == ("faces-a", "faces-b (held-out identities)")
    res = run("--train-data", a, "--val-data", b / "verify", "--val-pairs", b / "pairs.txt", "--batch-size", "4",
              "--max-steps", "2", "--out", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    s = json.loads((run_dir / "summary.json").read_text())
    assert (s["train_set"], s["eval_set"]) == ("faces-a", "faces-b (held-out identities)")
    assert "None" not in res.stdout
    # fewer steps than the warm-up: the summary says why there is no throughput
    assert "not more than the 5 warm-up steps" in res.stdout
    assert f"arcbench report {os.path.relpath(tmp_path / 'runs')}" in res.stdout or \
        f"arcbench report {tmp_path / 'runs'}" in res.stdout


def test_the_embedded_set_keeps_its_name(tmp_path):
    from arcbench.verification.sets import generated_set_name

    cached = synth(tmp_path / "synthfaces-v1-0123456789")
    os.remove(cached / "synth.json")
    (cached / "synth.json").write_text(json.dumps({"generator": "arcbench.synth"}))  # written before names
    assert generated_set_name(str(cached / "train")) == "synthetic-faces"


def test_bad_images_are_named_in_the_run_dir_and_on_screen(tmp_path):
    faces = synth(tmp_path / "faces", verify_identities=0)
    broken = [faces / "train" / d / "1.jpg" for d in sorted(os.listdir(faces / "train"))[:2]]
    for p in broken:
        p.write_bytes(p.read_bytes()[:40])  # truncated JPEGs
    res = run("--train-data", faces, "--batch-size", "4", "--epochs", "1", "--out", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    lines = (run_dir / "bad_images.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(str(p) for p in broken)
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in lines)
    assert "bad images skipped" in res.stdout and "bad_images.txt" in res.stdout
    assert f"bad image: {broken[0]}" in res.stdout or f"bad image: {broken[1]}" in res.stdout


def test_eta_comes_from_the_median_step_after_warm_up():
    """A start-up of 30 s over the first 10 steps must not stretch the ETA of 100 quick steps."""
    from arcbench.record.timed_steps import TimedSteps
    from arcbench.train.trainer import eta_message

    times = TimedSteps(warmup=5)  # 10 steps run, the first 5 warm-up
    for n, compute in enumerate([3.0] * 5 + [0.09, 0.09, 0.5, 0.09, 0.09], start=1):
        times.add(n, 0.01, compute)
    said = eta_message("epoch 1/2 done", 30.0, steps_run=10, global_step=10, total_steps=110,
                       median_step=times.median_step())
    assert "about 10 s to go" in said, said


@pytest.mark.slow
def test_bad_images_of_every_rank_are_counted_and_named(tmp_path):
    """Two processes each meet their share of the bad images: the summary counts all of them and
    bad_images.txt names all of them, not only rank 0's."""
    faces = synth(tmp_path / "faces", identities=4, images_per_identity=8, verify_identities=0)
    broken = [faces / "train" / d / f"{i}.jpg" for d in sorted(os.listdir(faces / "train")) for i in (1, 2)]
    for p in broken:
        p.write_bytes(p.read_bytes()[:40])  # truncated JPEGs, spread over both ranks' shards
    res = run("--train-data", faces, "--batch-size", "4", "--epochs", "1", "--nproc", "2", "--out", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    named = sorted(line.split("\t")[0] for line in (run_dir / "bad_images.txt").read_text().splitlines())
    assert summary["bad_images"] == len(broken) and named == sorted(str(p) for p in broken), (summary["bad_images"],
                                                                                             named)
