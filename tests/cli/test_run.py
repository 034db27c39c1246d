"""`arcbench run`: files, values, resume, loss guard, seed flags, eval mode.

Training uses the tiny backbone from ``tinyplugin`` (a third-party-style
plugin) on a tiny generated face set, so each run takes seconds on a CPU.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from arcbench.cli import main

from testutil import IMPORT_PATH, data_args, only_run_dir

HERE = Path(__file__).resolve().parents[1]  # tests/


@pytest.fixture(autouse=True)
def _plugin_path(monkeypatch):
    from arcbench import plugin_manager

    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", IMPORT_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)
    monkeypatch.delenv(plugin_manager.PLUGIN_MODULES_ENV, raising=False)  # restored (unset) after the test
    import tinyplugin

    plugin_manager.load_plugin_module("tinyplugin")
    tinyplugin.INTERRUPT_AT = None
    tinyplugin.reset_calls()
    yield
    plugin_manager.unregister_plugin("tinyplugin")


@pytest.fixture(scope="session")
def more_faces(tmp_path_factory):
    from arcbench.data.synth import generate

    root = tmp_path_factory.mktemp("more_faces")
    generate(root, identities=40, images_per_identity=6, verify_identities=40, verify_images=3, pairs=6, workers=0)
    return root


def run(args, expect=0):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", "cpu", "--workers", "0",
                                       "--eval-batch-size", "16", "--quiet"] + args)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result


def read_metrics(run_dir: Path):
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        assert line.startswith("DLLL "), line
        records.append(json.loads(line[5:]))
    return records


def step_losses(run_dir: Path):
    return {tuple(r["step"]): r["data"]["train.loss"] for r in read_metrics(run_dir)
            if r["type"] == "LOG" and len(r["step"]) == 2}


def test_short_run_writes_every_file_with_sane_values(faces, tmp_path):
    out = tmp_path / "runs"
    result = run(["--backbone", "tiny", "--epochs", "2", "--batch-size", "8", "--log-interval", "3",
                  *data_args(faces), "--out", str(out)])
    rd = only_run_dir(out)
    assert str(rd) in result.output
    for name in ("config.json", "system.json", "metrics.jsonl", "summary.json", "backbone.pth",
                 "checkpoints/last.pt", "checkpoints/epoch001.pt", "checkpoints/epoch002.pt",
                 "plots/loss.png", "plots/accuracy.png", "plots/roc.png"):
        assert (rd / name).is_file(), name
    cfg = json.loads((rd / "config.json").read_text())
    assert cfg["backbone"] == "tiny" and cfg["batch_size"] == 8 and cfg["epochs"] == 2
    system = json.loads((rd / "system.json").read_text())
    assert system["device"]["device"] == "cpu" and system["torch"] == torch.__version__ and system["python"]
    s = json.loads((rd / "summary.json").read_text())
    steps_per_epoch = 48 // 8
    assert s["status"] == "completed" and s["reason"] is None
    assert s["steps"] == 2 * steps_per_epoch and s["epochs"] == 2
    assert s["synthetic"] is True and s["train_set"] and s["eval_set"]
    assert s["throughput_median"] > 0 and s["throughput_mean"] > 0 and s["compute_ips"] >= s["throughput_median"]
    assert 0 <= s["data_wait_fraction"] < 1
    assert 0 < s["latency_p50"] and s["timed_steps"] == 7
    assert s["latency_p95"] is None and s["latency_p99"] is None  # tails need 100 timed steps
    assert s["step_timer"] == "synchronize" and 0 <= s["host_wait_fraction"] <= s["data_wait_fraction"]
    assert s["peak_memory"] > 0
    assert 0 <= s["lfw_accuracy"] <= 1 and 0 <= s["lfw_accuracy_std"] <= 0.5
    assert s["best_lfw_accuracy"] >= s["lfw_accuracy"]
    assert math.isfinite(s["final_loss"]) and s["precision"] == "fp32" and s["amp"] is False
    assert s["samples_per_rank"] == [2 * steps_per_epoch * 8]
    assert s["workers"] == 0  # the loader's decode workers per rank (--workers 0 here)
    # DLLogger records: metadata, one LOG per step (epoch, iteration), epoch summaries, the run summary
    recs = read_metrics(rd)
    assert any(r["type"] == "METADATA" and r["metric"] == "train.loss" for r in recs)
    losses = step_losses(rd)
    assert sorted(losses) == [(e, i) for e in (1, 2) for i in range(1, steps_per_epoch + 1)]
    assert any(r.get("step") == [2] and "val.lfw.accuracy" in r["data"] for r in recs)
    assert any(r.get("step") == [] for r in recs if r["type"] == "LOG")
    # the exported backbone loads into a fresh model for verify/eval
    from arcbench.inference.weights import load_backbone

    load_backbone("tiny", rd / "backbone.pth")


def test_interrupt_then_resume_matches_an_uninterrupted_run(faces, tmp_path):
    import tinyplugin

    common = ["--backbone", "tiny", "--epochs", "2", "--batch-size", "8", "--log-interval", "4",
              "--seed", "3", *data_args(faces)]
    run([*common, "--out", str(tmp_path / "a")])
    full = step_losses(only_run_dir(tmp_path / "a"))

    tinyplugin.reset_calls()
    tinyplugin.INTERRUPT_AT = 9  # SIGINT during step 9 (second epoch): the step finishes, then the run stops
    run([*common, "--out", str(tmp_path / "b")], expect=130)
    rd = only_run_dir(tmp_path / "b")
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["steps"] == 9
    tinyplugin.INTERRUPT_AT = None
    run(["--resume", str(rd)])
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 12 and s["resumed"] == 1
    resumed = step_losses(rd)
    assert sorted(resumed) == sorted(full)
    for step, loss in full.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step


def test_loss_guard_stops_on_nan_and_keeps_the_last_good_checkpoint(faces, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_NAN_AFTER", "8")  # epoch 1 is 6 steps: clean; NaN appears in epoch 2
    out = tmp_path / "runs"
    result = run(["--backbone", "tiny_nan", "--epochs", "3", "--batch-size", "8", "--log-interval", "2",
                  *data_args(faces), "--out", str(out)], expect=1)
    rd = only_run_dir(out)
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "failed"
    assert "loss became nan at step 9" in s["reason"]
    assert "loss became nan" in result.output
    ckpt = torch.load(rd / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["backbone"].values() if v.is_floating_point())


def _parse(args):
    from arcbench.cli.run import build_config, run_cmd

    ctx = run_cmd.make_context("run", list(args))
    return build_config(ctx.params)


def test_seed_flags_parse_with_their_meaning():
    cfg = _parse(["--model_name", "arcface", "--nproc_per_node", "3", "--batch_size", "96", "--lr", "1e-2",
                  "--device", "sdaa", "--epoch", "50", "--distributed", "True", "--use_amp", "True",
                  "--train_data_path", "datasets", "--train_annotation_path", "cls_train.txt",
                  "--val_data_path", "lfw", "--val_pairs_path", "model_data/lfw_pair.txt",
                  "--master_addr", "10.0.0.1", "--master_port", "29600", "--nnodes", "1", "--node_rank", "0"])
    assert (cfg.model.backbone, cfg.model.head, cfg.device) == ("mobilefacenet", "arcface", "sdaa")
    assert cfg.dist.nproc == 3 and cfg.schedule.batch_size == 96 and cfg.per_process_batch == 32  # seed: global batch
    assert cfg.optim.lr == 1e-2 and cfg.schedule.epochs == 50 and cfg.optim.precision == "amp"
    assert (cfg.data.train_data, cfg.data.annotation, cfg.data.val_data, cfg.data.val_pairs) == (
        "datasets", "cls_train.txt", "lfw", "model_data/lfw_pair.txt")
    assert (cfg.dist.master_addr, cfg.dist.master_port) == ("10.0.0.1", 29600)
    single = _parse(["--batch_size", "30", "--distributed", "False", "--use_amp", "False", "--nproc_per_node", "3"])
    assert single.dist.nproc == 1 and single.schedule.batch_size == 30 and single.optim.precision == "fp32"
    ev = _parse(["--eval_batch_size", "256", "--model_path", "w.pth", "--do_eval=True"])
    assert ev.mode == "eval" and ev.model.weights == "w.pth" and ev.eval.eval_batch_size == 256
    # arcbench's own flag is per process
    own = _parse(["--batch-size", "32", "--nproc", "2", "--amp"])
    assert own.schedule.batch_size == 64 and own.per_process_batch == 32 and own.optim.precision == "amp"
    dashed = _parse(["--use-amp", "true", "--train-data-path", "x", "--nproc-per-node", "2"])
    assert dashed.optim.precision == "amp" and dashed.data.train_data == "x" and dashed.dist.nproc == 2


def test_help_says_which_batch_size_applies():
    out = CliRunner().invoke(main, ["run", "--help"]).output
    assert "PER PROCESS" in out and "GLOBAL" in out and "--use_amp" in out


def test_trained_model_verifies_better_than_untrained_and_eval_mode_records_it(more_faces, tmp_path):
    faces = more_faces
    from arcbench.inference.weights import load_backbone
    from arcbench.verification.evaluate import evaluate
    from arcbench.registry import get_device
    from arcbench.verification.load import load_verification

    torch.manual_seed(0)
    vset = load_verification(val_data=str(faces / "verify"), val_pairs=str(faces / "pairs.txt"))
    untrained = evaluate(load_backbone("tiny"), get_device("cpu"), vset, batch_size=16, workers=0,
                         progress=False)
    out = tmp_path / "runs"
    run(["--backbone", "tiny", "--epochs", "10", "--batch-size", "16", "--lr", "0.2", *data_args(faces),
         "--out", str(out)])
    rd = only_run_dir(out)
    trained = json.loads((rd / "summary.json").read_text())
    assert trained["lfw_accuracy"] > untrained["accuracy"] + 0.05, (trained["lfw_accuracy"], untrained["accuracy"])
    # the seed's evaluation command on the exported weights reproduces the figure as an eval run
    out2 = tmp_path / "evals"
    run(["--do_eval=True", "--model_path", str(rd / "backbone.pth"), "--model_name", "tiny",
         "--val_data_path", str(faces / "verify"), "--val_pairs_path", str(faces / "pairs.txt"),
         "--out", str(out2)])
    s = json.loads((only_run_dir(out2) / "summary.json").read_text())
    assert s["mode"] == "eval" and s["status"] == "completed"
    assert s["lfw_accuracy"] == pytest.approx(trained["lfw_accuracy"], abs=1e-9)


def test_a_resumed_run_summarises_the_whole_run_and_a_completed_run_is_never_rewritten(faces, tmp_path):
    import tinyplugin

    common = ["--backbone", "tiny", "--epochs", "2", "--batch-size", "8", "--log-interval", "4",
              "--seed", "3", *data_args(faces)]
    run([*common, "--out", str(tmp_path / "a")])
    whole = json.loads((only_run_dir(tmp_path / "a") / "summary.json").read_text())

    tinyplugin.reset_calls()
    tinyplugin.INTERRUPT_AT = 9  # mid-epoch 2
    run([*common, "--out", str(tmp_path / "b")], expect=130)
    tinyplugin.INTERRUPT_AT = None
    rd = only_run_dir(tmp_path / "b")
    first = json.loads((rd / "summary.json").read_text())
    assert first["status"] == "interrupted" and len(first["segments"]) == 1
    run(["--resume", str(rd)])
    s = json.loads((rd / "summary.json").read_text())
    assert s["status"] == "completed"
    for key in ("samples", "steps", "epochs"):
        assert s[key] == whole[key], key
    assert s["samples"] == s["steps"] * s["batch_size"] == 12 * 8
    segs = s["segments"]
    assert [(g["start_step"], g["end_step"], g["ended"]) for g in segs] == [(0, 9, "interrupted"),
                                                                            (9, 12, "completed")]
    assert all(g["wall_time"] > 0 and g["host"] for g in segs)
    assert s["wall_time"] == pytest.approx(sum(g["wall_time"] for g in segs), abs=2e-3)
    # warm-up (5 steps) is excluded once per segment: 9 - 5 timed before the interrupt, 0 after it
    assert whole["timed_steps"] == 12 - 5 and s["timed_steps"] == 9 - 5
    assert 0.2 < s["throughput_median"] / whole["throughput_median"] < 5  # the same config, within noise

    # resuming the completed run is refused in one line, and its record stays byte for byte
    before = (rd / "summary.json").read_bytes()
    result = run(["--resume", str(rd)], expect=2)
    assert "run already completed (2 epochs); add --epochs N with N > 2 to extend it" in result.output
    assert (rd / "summary.json").read_bytes() == before
    # extending it keeps the completed segments' figures
    run(["--resume", str(rd), "--epochs", "3"])
    s3 = json.loads((rd / "summary.json").read_text())
    assert s3["status"] == "completed" and s3["steps"] == 18 and s3["samples"] == 18 * 8
    assert len(s3["segments"]) == 3 and s3["segments"][:2] == segs


@pytest.mark.slow
def test_the_embedded_default_run_is_deterministic(tmp_path):
    """The README's figures come from `arcbench run` on the embedded set: a shortened run of that
    exact configuration gives identical per-step losses and accuracy twice, so a figure that moves
    is a code change, not drift."""
    def once(out):
        # 3 steps leave every pair distance inside one step of the 0.01 grid: said, with the exact figure
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            result = CliRunner().invoke(main, ["run", "--max-steps", "3", "--log-interval", "1", "--quiet",
                                               "--out", str(out)])
        assert any("grid protocol reads chance" in str(w.message) for w in caught)
        assert result.exit_code == 0, result.output + repr(result.exception)
        rd = only_run_dir(out)
        cfg = json.loads((rd / "config.json").read_text())
        return step_losses(rd), json.loads((rd / "summary.json").read_text()), cfg

    losses_a, summary_a, cfg = once(tmp_path / "a")
    losses_b, summary_b, _ = once(tmp_path / "b")
    assert cfg["backbone"] == "mobilefacenet" and cfg["train_data"].endswith("train") and cfg["seed"] == 0
    assert len(losses_a) == 3 and losses_a == losses_b
    assert summary_a["lfw_accuracy"] == summary_b["lfw_accuracy"] is not None
    # the grid reads chance (0.5) this early; the exact-threshold figure is the one that could drift
    assert summary_a["lfw_accuracy_exact"] == summary_b["lfw_accuracy_exact"] > 0.6
