"""Resume is exact: an interrupted and resumed run equals an uninterrupted one, bit for bit on CPU.

What this needs, and each test guards: augmentation that is a function of
(seed, epoch, sample) rather than of loader-worker RNG state; the epoch's
running loss in the checkpoint; every rank's own RNG streams; checkpoints at
every N-th step whatever the log interval; and a run lock that forked loader
workers do not keep.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from arcbench.cli import main

from testutil import data_args, free_port, only_run_dir

HERE = Path(__file__).resolve().parents[2]  # tests/


pytestmark = pytest.mark.usefixtures("tiny")


def run(args, expect=0):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", "cpu", "--quiet",
                                       "--eval-batch-size", "16"] + args)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result


def records(run_dir: Path):
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.startswith("DLLL "):
            out.append(json.loads(line[5:]))
    return out


def step_losses(run_dir: Path) -> dict:
    return {tuple(r["step"]): r["data"]["train.loss"] for r in records(run_dir)
            if r["type"] == "LOG" and len(r["step"]) == 2 and "train.loss" in r["data"]}


def epoch_losses(run_dir: Path) -> dict:
    return {tuple(r["step"]): r["data"]["train.loss"] for r in records(run_dir)
            if r["type"] == "LOG" and len(r["step"]) == 1 and "train.loss" in r["data"]}


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "backbone.pth", weights_only=True)


def test_augmentation_is_a_function_of_seed_epoch_and_sample(faces):
    from arcbench.data.train_sets import augment_bit, make_loader, open_train_set

    bits = [augment_bit(3, e, i) for e in range(4) for i in range(500)]
    assert 0.4 < sum(bits) / len(bits) < 0.6  # about half the samples flip
    assert bits[:500] != bits[500:1000]  # and which ones changes with the epoch
    assert [augment_bit(3, 0, i) for i in range(500)] == bits[:500]  # stateless
    ds = open_train_set(str(faces / "train"), annotation=str(faces / "cls_train.txt"))

    def epoch_batches(workers, epoch):
        loader = make_loader(ds, batch_size=8, seed=5, workers=workers)
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    for epoch in (0, 1):
        plain, forked = epoch_batches(0, epoch), epoch_batches(2, epoch)
        assert all(torch.equal(a, b) for a, b in zip(plain, forked))


def test_checkpoints_land_on_every_nth_step_whatever_the_log_interval(faces, tmp_path, monkeypatch):
    from arcbench.train import checkpoints as train_state

    saved = []
    real = train_state.save

    def spy(path, **kw):
        if path.endswith("last.pt"):
            saved.append((kw["global_step"], kw["epoch_loss"][1]))
        return real(path, **kw)

    monkeypatch.setattr(train_state, "save", spy)
    run(["--backbone", "tiny", "--epochs", "2", "--batch-size", "8", "--workers", "0", "--checkpoint-steps", "5",
         "--log-interval", "4", *data_args(faces), "--out", str(tmp_path / "runs")])
    # 6 steps an epoch: every 5th step, and every epoch end (steps 6 and 12); the losses read so
    # far this epoch travel with each (5 at step 5, 4 at step 10 = 6 + 4; a whole epoch at its end)
    assert saved == [(5, 5), (6, 6), (10, 4), (12, 6)]


def test_interrupt_and_resume_with_two_loader_workers_is_bit_identical(faces, tmp_path):
    import tinyplugin

    common = ["--backbone", "tiny", "--epochs", "2", "--batch-size", "8", "--log-interval", "4", "--seed", "3",
              "--workers", "2", *data_args(faces)]
    run([*common, "--out", str(tmp_path / "a")])
    a = only_run_dir(tmp_path / "a")

    tinyplugin.reset_calls()
    tinyplugin.INTERRUPT_AT = 9  # mid-epoch 2, 3 steps into it
    run([*common, "--out", str(tmp_path / "b")], expect=130)
    tinyplugin.INTERRUPT_AT = None
    b = only_run_dir(tmp_path / "b")
    ckpt = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["global_step"] == 9 and ckpt["epoch_loss"][1] == 3
    run(["--resume", str(b)])
    assert step_losses(a) == step_losses(b) and len(step_losses(a)) == 12  # exactly, not approximately
    assert epoch_losses(a) == epoch_losses(b)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def cli(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("ARCBENCH_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "arcbench", "--plugin", "tinyplugin", *args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.mark.slow
def test_two_process_resume_mid_epoch_is_bit_identical(faces, tmp_path):
    """Stopped at step 8 of 12 (mid-epoch, a checkpoint every 4 steps), then resumed to 12, with a loader
    worker a rank: the same losses and weights as one uninterrupted 2-process run, and rank 1
    restored its own RNG streams, not rank 0's."""
    # --batch-size is per process: 24 images a rank, 3 steps an epoch, 12 steps in 4 epochs
    common = ["run", "--device", "cpu", "--nproc", "2", "--backbone", "tiny", "--epochs", "4", "--batch-size", "8",
              "--log-interval", "3", "--seed", "3", "--workers", "1", "--checkpoint-steps", "4", "--quiet",
              "--eval-batch-size", "16", *data_args(faces)]
    cli(*common, "--out", str(tmp_path / "a"), "--master-port", str(free_port()))
    cli(*common, "--max-steps", "8", "--out", str(tmp_path / "b"), "--master-port", str(free_port()))
    a, b = only_run_dir(tmp_path / "a"), only_run_dir(tmp_path / "b")
    rank1 = torch.load(b / "checkpoints" / "rng.rank1.pt", weights_only=True)
    rank0 = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert rank1["global_step"] == rank0["global_step"] == 8 and rank0["step_in_epoch"] == 2
    assert not torch.equal(rank1["rng"]["torch"], rank0["rng"]["torch"])  # seeded seed + rank
    cli("run", "--resume", str(b), "--max-steps", "12", "--quiet", "--master-port", str(free_port()))
    la, lb = step_losses(a), step_losses(b)
    assert len(la) == 12 and la == lb
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_run_lock_is_not_kept_by_forked_children(tmp_path):
    """Loader workers are forked while the run holds its lock: after the run lets go (an
    interrupt), a --resume must get the lock even if such a child is still alive."""
    from arcbench.errors import ArcbenchError
    from arcbench.run.rundir import RunLock

    lock = RunLock(str(tmp_path)).acquire()
    with pytest.raises(ArcbenchError, match="in use"):
        RunLock(str(tmp_path)).acquire()  # a second holder in the same process
    probe = [sys.executable, "-c", "import sys; from arcbench.run.rundir import RunLock; "
             "from arcbench.errors import ArcbenchError\ntry:\n RunLock(sys.argv[1]).acquire(); print('got')\n"
             "except ArcbenchError: print('in use')", str(tmp_path)]
    assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "in use"
    pid = os.fork()
    if pid == 0:  # a loader worker that outlives the run's release
        time.sleep(20)
        os._exit(0)
    try:
        lock.release()
        assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "got"
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
