"""What verification during training found is kept by its own record, and saved and restored with it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from arcbench.verification.epoch import EpochVerifier, VerificationRecord, headline_figures


def result(acc, **extra):
    return {"accuracy": acc, "accuracy_std": 0.02, "val": 0.3, "auc": 0.9, "eer": 0.1, "pairs_used": 600,
            "pairs_skipped": 0, "best_thresholds": [1.2, 1.4], **extra}


def test_the_record_keeps_the_headline_best_and_every_set_in_order():
    r = VerificationRecord()
    r.add(1, "lfw", result(0.70), headline=True)
    r.add(1, "cfp", result(0.60), headline=False)
    r.add(2, "lfw", result(0.65), headline=True)
    r.add(2, "cfp", result(0.62), headline=False)
    assert r.best_accuracy == 0.70 and r.last["accuracy"] == 0.65
    assert r.history["epoch_accuracy"] == [[1, 0.70, 0.02], [2, 0.65, 0.02]]
    assert r.history["sets"]["cfp"] == [[1, 0.60, 0.02], [2, 0.62, 0.02]]
    figures = r.figures()
    assert figures["lfw_accuracy"] == 0.65 and figures["eval_sets"] == ["lfw", "cfp"]
    assert figures["verification"]["lfw"]["best_accuracy"] == 0.70
    assert figures["verification"]["cfp"]["threshold"] == pytest.approx(1.3)


def test_the_record_round_trips_through_its_state_dict():
    r = VerificationRecord()
    r.add(1, "lfw", result(0.70), headline=True)
    state = r.state_dict()
    assert set(state) == {"best_accuracy", "history"}
    back = VerificationRecord()
    back.load_state_dict({**state, "history": {"loss": [[1, 2.0]], **state["history"]}})  # a checkpoint's history
    assert back.best_accuracy == 0.70 and back.history == r.history and "loss" not in back.history
    assert back.last is None  # the last result itself is not checkpointed: the summary names the figures verified now


def test_headline_figures_name_the_single_set_summary_fields():
    assert headline_figures(result(0.7)) == {"lfw_accuracy": 0.7, "lfw_accuracy_std": 0.02, "val_at_far": 0.3,
                                             "auc": 0.9, "eer": 0.1, "eval_pairs": 600, "eval_pairs_skipped": 0}
    exact = headline_figures(result(0.5, grid_unresolved=True, accuracy_exact=0.55))
    assert exact["lfw_accuracy_exact"] == 0.55


def test_the_verifier_decides_from_what_every_rank_knows(monkeypatch):
    from arcbench import registry

    monkeypatch.setattr(registry, "get_backbone", lambda name: SimpleNamespace(input_size=112, fold_bn=False))
    v = EpochVerifier([SimpleNamespace(name="lfw")], SimpleNamespace(eval=SimpleNamespace(eval_every=2), model=SimpleNamespace(backbone="x")), device=None)
    assert [v.due(e, global_step=e * 10, total_steps=50) for e in (1, 2, 3, 4, 5)] == [False, True, False, True, True]
    never = EpochVerifier([SimpleNamespace(name="lfw")], SimpleNamespace(eval=SimpleNamespace(eval_every=0), model=SimpleNamespace(backbone="x")), device=None)
    assert not never.due(5, 50, 50) and not never.done
