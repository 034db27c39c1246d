"""The Checkpointer is told why it saves, and its checkpoints restore every part of a Trainer."""
from __future__ import annotations

import pytest
import torch

from arcbench.train import checkpoints
from arcbench.train.checkpointer import Checkpointer, SaveReason

#: the entries of the training checkpoint format; older checkpoints have the same, so they still resume
FORMAT_KEYS = {"format", "backbone", "head", "head_full", "optimizer", "scheduler", "scaler", "epoch",
               "step_in_epoch", "global_step", "best_accuracy", "history", "rng", "timing", "epoch_loss"}


@pytest.fixture()
def tiny():
    from arcbench import plugin_manager

    plugin_manager.load_plugin_module("tinyplugin")
    yield
    plugin_manager.unregister_plugin("tinyplugin")


def trainer(tmp_path, name="run", **over):
    from arcbench import registry
    from arcbench.config import RunConfig
    from arcbench.data.synthetic_batches import SyntheticBatches
    from arcbench.record.recorder import Recorder
    from arcbench.train.trainer import Trainer

    cfg = RunConfig(**{**dict(device="cpu", backbone="tiny", batch_size=4, train_data="synthetic",
                              synthetic_classes=10, synthetic_steps=3, epochs=4, quiet=True, log_interval=2,
                              timing_warmup=1, seed=3), **over})
    dev = registry.require_device("cpu")
    torch.manual_seed(cfg.schedule.seed)
    run_dir = tmp_path / name
    run_dir.mkdir()
    return Trainer(cfg, dev, SyntheticBatches(4, num_classes=10, steps_per_epoch=3, input_size=112),
                   recorder=Recorder(str(run_dir)), log=lambda *a: None, run_dir=str(run_dir)), run_dir


def test_an_epoch_end_save_keeps_the_epoch_file_and_a_step_save_only_last(tiny, tmp_path):
    tr, run_dir = trainer(tmp_path)
    tr.train_epoch()
    assert tr.checkpointer.save(SaveReason.STEP_INTERVAL)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt"]
    assert tr.checkpointer.save(SaveReason.EPOCH_END)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch001.pt", "last.pt"]
    assert tr.checkpointer.save(SaveReason.INTERRUPT)  # one process, a head that is not sharded: saved
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert set(state) == FORMAT_KEYS and set(state["history"]) == {"loss", "epoch_accuracy", "epoch_loss"}
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 3)


class ShardedHead:
    """A sharded head's full-state hook (the head contract), counting the gathers it is asked for."""

    def __init__(self, gathers):
        self.gathers = gathers

    def full_state(self, optimizer):
        self.gathers.append(1)


def sharded(rank, said, gathers):
    import types

    from arcbench.train.progress import Progress

    face = types.SimpleNamespace(head_sharded=True, head=ShardedHead(gathers))
    training = types.SimpleNamespace(face=face, optimizer=None)
    return Checkpointer(training, {"progress": Progress()}, device=None, rank=rank, world_size=2, log=said.append)


def test_an_interrupt_with_a_sharded_head_over_several_processes_saves_nothing():
    """Told it is an interrupt, it must not gather (rank 0 is alone); told anything else, it gathers."""
    gathers, said = [], []
    assert sharded(0, said, gathers).save(SaveReason.INTERRUPT) is False
    assert gathers == [] and len(said) == 1 and "the last one is kept" in said[0]
    for reason in (SaveReason.STEP_INTERVAL, SaveReason.EPOCH_END):
        assert sharded(1, said, gathers).save(reason) is True
    assert gathers == [1, 1] and len(said) == 1


def test_the_reason_is_what_counts_not_an_exception_in_flight():
    """A save at a step boundary reached while some exception is being handled still gathers."""
    gathers, said = [], []
    try:
        raise KeyboardInterrupt("signal 2")
    except KeyboardInterrupt:
        sharded(1, said, gathers).save(SaveReason.STEP_INTERVAL)
    assert gathers == [1]


def test_a_checkpoint_restores_every_part_of_the_trainer(tiny, tmp_path):
    a, _ = trainer(tmp_path, "a")
    a.train_epoch()
    a.verified.add(a.progress.epoch, "pairs", {"accuracy": 0.75, "accuracy_std": 0.01}, headline=True)
    a.train_epoch()
    a.checkpointer.save(SaveReason.STEP_INTERVAL)
    b, run_b = trainer(tmp_path, "b")
    b.restore(str(tmp_path / "a" / "checkpoints" / "last.pt"))
    assert b.progress.state_dict() == a.progress.state_dict() == {"epoch": 2, "step_in_epoch": 0, "global_step": 6}
    assert b.metrics.history == a.metrics.history and len(b.metrics.history["loss"]) == 6
    assert b.metrics.times.compute == a.metrics.times.compute and len(b.metrics.times) == 5  # warm-up: the first step
    assert b.metrics.samples == 24 and b.metrics.epoch_loss == a.metrics.epoch_loss
    assert b.verified.best_accuracy == 0.75 and b.verified.history["epoch_accuracy"] == [[1, 0.75, 0.01]]
    assert b.verified.history["sets"] == {"pairs": [[1, 0.75, 0.01]]}
    wa, wb = a.face.state_dict(), b.face.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert b.scheduler.state_dict() == a.scheduler.state_dict()
    assert b.resume_rng is not None  # set again after the next epoch's data skip


def test_a_resumed_trainer_goes_on_exactly_as_one_that_never_stopped(tiny, tmp_path):
    a, _ = trainer(tmp_path, "a")
    for _ in range(3):
        a.train_epoch()
    b, _ = trainer(tmp_path, "b")
    b.train_epoch()
    b.checkpointer.save(SaveReason.INTERRUPT)
    c, _ = trainer(tmp_path, "c")
    c.restore(str(tmp_path / "b" / "checkpoints" / "last.pt"))
    c.train_epoch()
    c.train_epoch()
    assert c.metrics.history["loss"] == a.metrics.history["loss"]
    assert c.metrics.history["epoch_loss"] == a.metrics.history["epoch_loss"]


def test_restore_refuses_a_checkpoint_of_another_kind(tiny, tmp_path):
    from arcbench.errors import ArcbenchError

    tr, run_dir = trainer(tmp_path)
    torch.save({"format": "something-else"}, run_dir / "x.pt")
    with pytest.raises(ArcbenchError, match="not an arcbench training checkpoint"):
        tr.restore(str(run_dir / "x.pt"))
    assert checkpoints.latest(str(run_dir)) is None
