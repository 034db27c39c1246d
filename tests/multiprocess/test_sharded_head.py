"""A third-party sharded head (tests/standins/shardedhead.py) plugs in the way Partial FC does.

It registers through the same ``register_heads`` hook and implements the head
contract's hooks (arcbench.head) with its own code: a 2-process run trains with it,
checkpoints its full state (not a shard), and resumes at 3 processes with that state
re-sharded; its clipping, state size and plan are the core's, called through the
hooks.  The runs use the ``fakecards`` stand-in accelerator (tensors on the host,
gloo), as test_partial_fc_run.py does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from testutil import IMPORT_PATH, free_port

C, DIM = 7, 32  # classes (divide by neither 2 nor 3), the tiny backbone's embedding


def arcbench(log: Path, *args, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = IMPORT_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ARCBENCH_DEBUG", None)
    env.update(OMP_NUM_THREADS="1", FAKECARDS_COUNT="4", SHARDEDHEAD_LOG=str(log))
    cmd = [sys.executable, "-m", "arcbench", "--plugin", "fakecards", "--plugin", "tinyplugin",
           "--plugin", "shardedhead", *args, "--master-port", str(free_port())]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout
    return p.stdout


def calls(log: Path) -> list:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_sharded_third_party_head_trains_checkpoints_and_resumes_at_another_process_count(tmp_path):
    out = tmp_path / "runs"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    arcbench(first, "run", "--device", "fakecard", "--backbone", "tiny", "--train-data", "synthetic",
             "--synthetic-classes", str(C), "--synthetic-steps", "2", "--epochs", "3", "--head", "sharded",
             "--no-channels-last", "--log-interval", "1", "--quiet", "--lr", "0.05", "--grad-clip", "0.5",
             "--nproc", "2", "--batch-size", "6", "--max-steps", "2", "--out", str(out), "--run-id", "a")
    run = out / "a"
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["global_step"] == 2
    # the head's own full state, not rank 0's shard; its momentum rides there, not in the optimiser's
    assert saved["head"] is None and saved["head_full"]["format"] == "shardedhead/1"
    weight, momentum = saved["head_full"]["weight"], saved["head_full"]["momentum"]
    assert weight.shape == momentum.shape == (C, DIM) and float(momentum[4:].abs().sum()) > 0  # rank 1's rows too
    import tinyplugin

    assert len(saved["optimizer"]["state"]) == len(list(tinyplugin.Tiny(embedding_size=DIM).parameters()))

    got = calls(first)
    for hook in ("full_state", "clip_grad_norm_"):  # every rank takes part in the collective hooks
        assert {(c["rank"], c["world"]) for c in got if c["hook"] == hook} == {(0, 2), (1, 2)}, hook
    assert sum(c["hook"] == "clip_grad_norm_" for c in got) == 2 * 2  # each step on each rank
    totals = [[c["total"] for c in got if c["hook"] == "clip_grad_norm_" and c["rank"] == r] for r in (0, 1)]
    assert totals[0] == pytest.approx(totals[1], rel=1e-6)  # the global norm: the same on every rank
    assert {c["hook"] for c in got} >= {"state_params", "state_bytes"}
    assert not [c for c in got if c["hook"] == "load_full_state"]  # a fresh run loads nothing

    arcbench(second, "run", "--resume", str(run), "--nproc", "3", "--max-steps", "4")
    loaded = [c for c in calls(second) if c["hook"] == "load_full_state"]
    assert sorted((c["rank"], c["world"], c["start"], c["end"]) for c in loaded) == [
        (0, 3, 0, 3), (1, 3, 3, 5), (2, 3, 5, 7)]  # the full state re-sharded for three ranks
    for c in loaded:  # each rank kept exactly its rows of the saved centres
        assert abs(c["weight_sum"] - float(weight[c["start"]:c["end"]].double().sum())) < 1e-9
    assert {(c["rank"], c["world"]) for c in calls(second) if c["hook"] == "clip_grad_norm_"} == {
        (0, 3), (1, 3), (2, 3)}

    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    losses = {int(step): float(v) for step, v in ck["history"]["loss"]}
    assert sorted(losses) == [1, 2, 3, 4] and all(torch.isfinite(torch.tensor(list(losses.values()))))
    assert ck["head_full"]["weight"].shape == (C, DIM)
    assert not torch.equal(ck["head_full"]["weight"], weight)  # the resumed steps trained the centres
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and s["nproc"] == 3 and s["head"] == "sharded"
    assert s["head_params_per_rank"] == 3 * DIM  # rank 0's shard of 7 over 3: 3 rows


def test_the_bench_plans_a_third_party_head_with_its_registered_plan(monkeypatch):
    import shardedhead

    from arcbench import plugin_manager
    from arcbench.bench.grid import head_flops_per_image, head_plan

    monkeypatch.setattr("arcbench.bench.grid.memory_per_process",
                        lambda device, nproc: (10 ** 9, "the device has 1.0 GB"))
    plugin_manager.register_plugin(shardedhead, "shardedhead-plan")
    try:
        shardedhead.CALLS.clear()
        planned = head_plan("iresnet50", "sharded", 1_000_001, 1.0, 4, 8, device=None)
        flops = head_flops_per_image("iresnet50", "sharded", 1_000_001, 1.0, 4)
    finally:
        plugin_manager.unregister_plugin("shardedhead-plan")
    assert [c["hook"] for c in shardedhead.CALLS] == ["plan", "plan"]
    assert planned["head_memory_planned"] == 250_001 * 512 * 4 * 3  # the largest of four shards
    assert planned["step_memory_planned"] == 250_001 * 512 * 4 * 3 + 2 * 32 * 1_000_001 * 4
    assert planned["fit_error"].startswith("1,000,001 classes x 512 dims over 4 ranks, about 1.8 GB")
    assert flops == 2 * 512 * 1_000_001
