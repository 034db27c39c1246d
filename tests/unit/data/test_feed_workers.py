"""Decode workers per rank: sized to the host, not capped; persistent, each building batches ahead."""
from __future__ import annotations

import pytest

from arcbench.data import synth
from arcbench.data import train_sets
from arcbench.data.train_sets import default_workers, make_loader, open_train_set


@pytest.mark.parametrize("cpus, ranks, want", [(16, 1, 14), (16, 2, 6), (64, 8, 6), (2, 1, 1), (4, 4, 1),
                                               (1, 1, 1)])
def test_default_workers_share_the_cores_less_the_trainer_and_the_pinning(monkeypatch, cpus, ranks, want):
    monkeypatch.setattr(train_sets.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
    assert default_workers() == want
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_workers(ranks) == want  # the launcher's world size when no LOCAL_WORLD_SIZE is set


def test_workers_persist_and_prefetch_and_the_flag_overrides(tmp_path, monkeypatch):
    synth.generate(tmp_path / "f", identities=2, images_per_identity=4, verify_identities=0, pairs=0, workers=0)
    ds = open_train_set(str(tmp_path / "f"))
    monkeypatch.setattr(train_sets.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    loader = make_loader(ds, batch_size=2)
    assert loader.workers == 6 and loader.loader.num_workers == 6
    assert loader.loader.persistent_workers and loader.loader.prefetch_factor == train_sets.PREFETCH_FACTOR >= 2
    assert make_loader(ds, batch_size=2, workers=3).workers == 3
    assert make_loader(ds, batch_size=2, workers=0).loader.num_workers == 0
