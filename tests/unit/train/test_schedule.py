"""The reference recipe: lr schedules, Min_lr_fit, defaults, margins, dropout, eval precision, flip.

The expected values are written out from the reference's formulas (bubbliiiing/arcface-pytorch
``get_lr_scheduler`` with ``Init_lr_fit``/``Min_lr_fit``), independently of arcbench.train.schedule.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from arcbench.cli import main
from arcbench.config import RunConfig
from arcbench.errors import ArcbenchError
from arcbench.train.schedule import lr_factor



def formula_reference(e, E, lr, min_lr):
    """Quadratic warm-up from max(0.1 lr, 1e-6) over min(max(0.1E,1),3) epochs, cosine to min_lr
    until E - min(max(0.3E,1),15), then flat."""
    warm = min(max(0.1 * E, 1), 3)
    start = max(0.1 * lr, 1e-6)
    tail = min(max(0.3 * E, 1), 15)
    if e <= warm:
        return (lr - start) * pow(e / float(warm), 2) + start
    if e >= E - tail:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (e - warm) / (E - warm - tail)))


def per_step_lrs(cfg, steps_per_epoch):
    """Drive a real optimizer + LambdaLR the way the trainer does; lr used at each step."""
    total = steps_per_epoch * cfg.schedule.epochs
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.effective_lr())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, total, steps_per_epoch))
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("epochs", [1, 3, 10, 50])
def test_reference_schedule_matches_the_formula_epoch_by_epoch(epochs):
    cfg = RunConfig(batch_size=96, lr=1e-2, epochs=epochs, lr_schedule="reference")
    lr_fit = min(max(96 / 64 * 1e-2, 5e-4), 1e-1)
    min_fit = min(max(96 / 64 * 1e-2 * 0.01, 5e-4 * 1e-2), 1e-1 * 1e-2)
    assert cfg.effective_lr() == pytest.approx(lr_fit) and cfg.min_lr() == pytest.approx(min_fit)
    spe = 7
    lrs = per_step_lrs(cfg, spe)
    for e in range(epochs):
        want = formula_reference(e, epochs, lr_fit, min_fit)
        epoch_lrs = lrs[e * spe:(e + 1) * spe]
        # applied once per epoch: constant within it
        assert epoch_lrs == pytest.approx([want] * spe, rel=1e-9, abs=1e-15), (epochs, e)


def test_reference_schedule_known_points():
    # E=10: warm-up 1 epoch, tail 3 epochs; E=50: warm-up 3, tail 15 (spelled out)
    cfg = RunConfig(batch_size=64, lr=1e-2, epochs=10)
    lrs = per_step_lrs(cfg, 1)
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-2)
    assert lrs[4] == pytest.approx(1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + math.cos(math.pi * 3 / 6)))
    assert lrs[6] > 1e-4 and lrs[7:] == pytest.approx([1e-4] * 3)
    cfg = RunConfig(batch_size=64, lr=1e-2, epochs=50)
    lrs = per_step_lrs(cfg, 1)
    assert lrs[1] == pytest.approx((1e-2 - 1e-3) / 9 + 1e-3) and lrs[3] == pytest.approx(1e-2)
    assert lrs[34] > 1e-4 and lrs[35:] == pytest.approx([1e-4] * 15)


@pytest.mark.parametrize("epochs", [10, 20, 50])
def test_step_schedule_decays_every_tenth_of_the_run(epochs):
    cfg = RunConfig(batch_size=64, lr=1e-2, epochs=epochs, lr_schedule="step")
    lr, min_lr = 1e-2, 1e-4
    rate = (min_lr / lr) ** (1 / 9)
    lrs = per_step_lrs(cfg, 3)
    for e in range(epochs):
        assert lrs[3 * e] == pytest.approx(lr * rate ** int(e // (epochs / 10))), e
    assert lrs[-1] == pytest.approx(min_lr)


def test_min_lr_fit_clamps():
    # SGD: clamp(batch/64 * 0.01 lr, 5e-6, 1e-3); Adam(W): clamp(.., 3e-6, 1e-5)
    assert RunConfig(batch_size=64, lr=1e-2).min_lr() == pytest.approx(1e-4)
    assert RunConfig(batch_size=64, lr=1e-4).min_lr() == pytest.approx(5e-6)
    assert RunConfig(batch_size=64 * 20, lr=1.0).min_lr() == pytest.approx(1e-3)
    assert RunConfig(batch_size=64, optimizer="adamw").min_lr() == pytest.approx(1e-5)
    assert RunConfig(batch_size=64, lr=1e-4, optimizer="adamw").min_lr() == pytest.approx(3e-6)
    assert RunConfig(batch_size=640, lr=0.5, scale_lr=False).min_lr() == pytest.approx(5e-3)


def test_cosine_schedule_stays_per_iteration():
    cfg = RunConfig(batch_size=64, lr=1e-2, epochs=2, lr_schedule="cosine", warmup_steps=4)
    lrs = per_step_lrs(cfg, 10)
    assert lrs[0] == pytest.approx(1e-2 / 5) and lrs[4] == pytest.approx(1e-2)
    assert lrs[5] < lrs[4] and len(set(lrs[10:20])) == 10  # changes every iteration
    assert lrs[-1] == pytest.approx(1e-2 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 15 / 16))))


def _parse(args):
    from arcbench.cli.run import build_config, run_cmd

    return build_config(run_cmd.make_context("run", list(args)).params)


SEED_FLAGS = ["--model_name", "arcface", "--nproc_per_node", "3", "--batch_size", "96", "--lr", "1e-2",
              "--device", "sdaa", "--epoch", "50", "--distributed", "True", "--use_amp", "True"]


def test_defaults_are_the_reference_recipe():
    for cfg in (_parse([]), _parse(SEED_FLAGS), RunConfig()):
        assert cfg.schedule.lr_schedule == "reference" and cfg.eval.eval_precision == "fp32"
        assert cfg.to_dict()["lr_schedule"] == "reference"
    plain = _parse(["--train-data", "x"])
    assert plain.optim.lr == 1e-2 and plain.optim.optimizer == "sgd" and plain.model.margin_m is None
    assert _parse(SEED_FLAGS).optim.lr == 1e-2 and _parse(["--lr", "0.02"]).optim.lr == 0.02
    assert _parse([]).optim.lr == 0.1  # the embedded synthetic set's own lr (3 epochs), see README
    assert _parse(["--optimizer", "adamw"]).optim.lr == 1e-3 and RunConfig(optimizer="adamw").optim.lr == 1e-3
    assert _parse(["--train-data", "x"]).schedule.epochs == RunConfig().schedule.epochs == 50
    assert _parse([]).schedule.epochs == 3  # the embedded synthetic set
    assert _parse(["--lr-schedule", "cosine"]).schedule.lr_schedule == "cosine"
    assert _parse(["--schedule", "step"]).schedule.lr_schedule == "step"
    # an old run dir (no lr_schedule in config.json) resumes with the schedule it ran with
    old = {"mode": "train", "lr": 0.1, "schedule": "cosine", "step_milestones": [0.5, 0.75],
           "margin_m": 0.5, "head": "combined"}
    resumed = RunConfig.from_dict(old)
    assert resumed.schedule.lr_schedule == "cosine" and resumed.model.margin_m is None
    resumed.validate()


def test_margins_apply_per_head_or_are_refused():
    from arcbench.train.model import build_face_model

    def head(**kw):
        return build_face_model(RunConfig(backbone="mobilefacenet", **kw), 10).head

    assert head(head="arcface").m == 0.5
    assert head(head="cosface").m == 0.35  # CosFace's own default, not ArcFace's
    assert head(head="cosface", margin_m=0.2).m == 0.2
    assert head(head="arcface", margin_m=0.3).m == 0.3
    with pytest.raises(ArcbenchError, match="combined"):
        _parse(["--head", "combined", "--margin-m", "0.3"]).validate()
    _parse(["--head", "combined"]).validate()


def test_iresnet_trains_with_the_reference_dropout():
    from arcbench.registry import get_backbone

    with torch.device("meta"):
        net = get_backbone("iresnet18").create()
    assert net.dropout.p == 0.5


def test_training_flip_happens_before_the_letterbox(tmp_path):
    import numpy as np
    from PIL import Image

    from arcbench.data.preprocess import letterbox, load_tensor, to_array

    rng = np.random.default_rng(0)
    path = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 255, (112, 97, 3), dtype=np.uint8)).save(path)  # 15 px margin: 7 + 8
    img = Image.open(path).convert("RGB")
    want = to_array(letterbox(img.transpose(Image.FLIP_LEFT_RIGHT), 112))
    got = load_tensor(str(path), 112, flip=True).numpy()
    assert np.array_equal(got, want)
    after = to_array(letterbox(img, 112).transpose(Image.FLIP_LEFT_RIGHT))
    assert not np.array_equal(got, after)  # the two orders differ by the rounding of the margin
    grey = (128 / 255 - 0.5) / 0.5
    assert np.allclose(got[:, :, :7], grey, atol=1e-6) and not np.allclose(got[:, :, 7], grey, atol=1e-6)  # as
    assert np.allclose(after[:, :, :8], grey, atol=1e-6)  # the reference: left margin 7; flipping after: 8


# ------------------------------------------------------------------ runs
def _run(args, expect=0):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", "cpu", "--workers", "0",
                                       "--eval-batch-size", "16", "--quiet"] + args)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result


@pytest.mark.parametrize("extra, want_amp", [([], False), (["--eval-precision", "amp"], True)])
def test_verification_runs_in_fp32_under_amp_unless_asked(faces, tmp_path, tiny, monkeypatch, extra, want_amp):
    import arcbench.verification.evaluate as ev

    seen = []
    real = ev.evaluate

    def spy(*a, **kw):
        seen.append(kw.get("amp"))
        return real(*a, **kw)

    monkeypatch.setattr(ev, "evaluate", spy)
    out = tmp_path / "runs"
    _run(["--backbone", "tiny", "--epochs", "1", "--batch-size", "8", "--amp", *extra,
          "--train-data", str(faces / "train"), "--annotation", str(faces / "cls_train.txt"),
          "--val-data", str(faces / "verify"), "--val-pairs", str(faces / "pairs.txt"), "--out", str(out)])
    rd = next(out.iterdir())
    s = json.loads((rd / "summary.json").read_text())
    cfg = json.loads((rd / "config.json").read_text())
    assert seen and set(seen) == {want_amp}
    assert s["precision"] == "amp" and s["eval_precision"] == ("amp" if want_amp else "fp32")
    assert cfg["lr_schedule"] == "reference" and s["lr_schedule"] == "reference"
    # the logged lr follows the reference schedule: 1 epoch = the warm-up start, 0.1 * lr
    recs = [json.loads(line[5:]) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["data"]["train.lr"] for r in recs if r["type"] == "LOG" and "train.lr" in r["data"]]
    assert lrs and all(v == pytest.approx(0.1 * cfg["effective_lr"]) for v in lrs)
