"""Multi-card runs without cards: every rank on its own card, the same collectives on every rank.

``fakecards`` is a third-party-style accelerator plugin with 4 cards that
records every card index the harness asks for (its tensors live on the
host).  Against the code before device binding, rank 1 made its synthetic
batches and its evaluation inputs on card 0: these tests failed there.

Multi-process runs also record each rank's sequence of harness collectives
(``ARCBENCH_COLLECTIVE_LOG``): the sequences must be identical on all ranks,
or a run can hang (a rank in a barrier while another is in an all_gather).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from testutil import IMPORT_PATH, free_port

HERE = Path(__file__).resolve().parents[1]  # tests/
pytestmark = pytest.mark.slow


def arcbench(args, tmp_path, timeout=240, extra_env=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = IMPORT_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ARCBENCH_DEBUG", None)
    env["OMP_NUM_THREADS"] = "1"
    (tmp_path / "cards").mkdir(exist_ok=True)
    (tmp_path / "collectives").mkdir(exist_ok=True)
    env["FAKECARDS_LOG"] = str(tmp_path / "cards")
    env["ARCBENCH_COLLECTIVE_LOG"] = str(tmp_path / "collectives")
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "arcbench", "--plugin", "fakecards", "--plugin", "tinyplugin", *args]
    start = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return p, time.monotonic() - start


def card_events(tmp_path):
    rows = []
    for f in (tmp_path / "cards").glob("*.jsonl"):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return rows


def assert_each_rank_on_its_card(tmp_path, ranks=(0, 1)):
    rows = [r for r in card_events(tmp_path) if "RANK" not in r]
    worker_rows = [r for r in rows if r["rank"] in ranks]
    seen = defaultdict(set)
    for r in worker_rows:
        seen[(r["rank"], r["event"])].add(r["index"])
    for rank in ranks:
        assert seen[(rank, "bind")] == {rank}, dict(seen)
        assert seen[(rank, "place")] == {rank}, f"rank {rank} placed tensors on cards {seen[(rank, 'place')]}"
    return seen


def collective_sequences(tmp_path):
    out = {}
    for f in sorted((tmp_path / "collectives").glob("rank*.jsonl")):
        out[f.stem] = [(r["op"], r["name"]) for r in map(json.loads, f.read_text().splitlines())]
    return out


def the_run(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A small synthetic face set: 8 identities x 4 images, 20 held-out identities, 10 folds."""
    root = tmp_path_factory.mktemp("faces")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "arcbench", "data", "synth", "-o", str(root), "--identities", "8",
                    "--images-per-identity", "4", "--verify-identities", "20", "--pairs", "10"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return root


def test_two_process_synthetic_run_keeps_each_rank_on_its_card(tmp_path):
    out = tmp_path / "runs"
    p, _ = arcbench(["run", "--device", "fakecard", "--backbone", "tiny", "--train-data", "synthetic",
                     "--synthetic-classes", "10", "--synthetic-steps", "6", "--epochs", "1", "--batch-size", "4",
                     "--nproc", "2", "--quiet", "--out", str(out), "--master-port", str(free_port())], tmp_path)
    assert p.returncode == 0, p.stdout
    seen = assert_each_rank_on_its_card(tmp_path)
    assert seen[(0, "ddp")] == {0} and seen[(1, "ddp")] == {1}
    s = json.loads((the_run(out) / "summary.json").read_text())
    assert s["status"] == "completed" and s["samples_per_rank"] == [24, 24]
    assert len(s["throughput_per_rank"]) == 2 and min(s["throughput_per_rank"]) > 0
    assert s["throughput_median"] == pytest.approx(sum(s["throughput_per_rank"]))
    assert s["card_per_rank"] == [0, 1]
    system = json.loads((the_run(out) / "system.json").read_text())
    assert system["placements"] == [{"rank": 0, "device": "fakecard", "card": 0},
                                    {"rank": 1, "device": "fakecard", "card": 1}]
    seqs = collective_sequences(tmp_path)
    assert set(seqs) == {"rank0", "rank1"} and seqs["rank0"] == seqs["rank1"]
    assert ("all_gather", "run.figures") in seqs["rank0"]


def test_image_folder_run_with_verification_each_epoch_on_two_cards(tmp_path, faces):
    out = tmp_path / "runs"
    p, _ = arcbench(["run", "--device", "fakecard", "--backbone", "tiny", "--train-data", str(faces / "train"),
                     "--val-data", str(faces / "verify"), "--val-pairs", str(faces / "pairs.txt"),
                     "--epochs", "4", "--eval-every", "1", "--batch-size", "8", "--nproc", "2", "--workers", "0",
                     "--eval-batch-size", "16", "--quiet", "--out", str(out),
                     "--master-port", str(free_port())], tmp_path)
    assert p.returncode == 0, p.stdout
    assert_each_rank_on_its_card(tmp_path)
    s = json.loads((the_run(out) / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs"] == 4 and s["lfw_accuracy"] is not None
    # 32 images, 16 a rank: 2 steps an epoch, 8 in all, 3 timed after the 5 warm-up steps
    assert s["timed_steps"] == 3 and min(s["throughput_per_rank"]) > 0
    assert s["throughput_median"] == pytest.approx(sum(s["throughput_per_rank"]))
    seqs = collective_sequences(tmp_path)
    assert seqs["rank0"] == seqs["rank1"]
    gathers = [name for op, name in seqs["rank0"] if name == "eval.embeddings"]
    assert len(gathers) == 4  # one sharded verification per epoch, on both ranks


def test_two_process_bench_keeps_each_rank_on_its_card(tmp_path):
    out = tmp_path / "runs"
    p, _ = arcbench(["bench", "--device", "fakecard", "--backbone", "tiny", "--precision", "fp32",
                     "--batch-size", "4", "--nproc", "2", "--warmup", "1", "--steps", "3", "--classes", "10",
                     "--out", str(out), "--json"], tmp_path)
    assert p.returncode == 0, p.stdout
    assert_each_rank_on_its_card(tmp_path)
    rows = json.loads(p.stdout[p.stdout.index("["):])
    assert rows[0]["status"] == "completed" and rows[0]["nproc"] == 2 and rows[0]["throughput_median"] > 0


def test_two_processes_on_one_card_are_refused(tmp_path):
    p, _ = arcbench(["run", "--device", "fakecard", "--backbone", "tiny", "--train-data", "synthetic",
                     "--nproc", "2", "--quiet", "--out", str(tmp_path / "runs")], tmp_path,
                    extra_env={"FAKECARDS_COUNT": "1"})
    assert p.returncode == 2
    assert "2 processes but 1 fakecard card" in p.stdout and "Traceback" not in p.stdout


def test_cpu_run_with_verification_every_epoch_completes_three_times(tmp_path, faces):
    """The hang of the issue: rank 0 in a barrier inside evaluation, rank 1 (no verification
    set) already in the final all_gather.  Now every rank embeds a share, three runs in a row."""
    for attempt in range(3):
        work = tmp_path / f"try{attempt}"
        work.mkdir()
        p, seconds = arcbench(["run", "--device", "cpu", "--nproc", "2", "--epochs", "2", "--eval-every", "1",
                               "--batch-size", "8", "--backbone", "tiny", "--train-data", str(faces / "train"),
                               "--val-data", str(faces / "verify"), "--val-pairs", str(faces / "pairs.txt"),
                               "--quiet", "--out", str(work / "runs"), "--master-port", str(free_port())],
                              work, timeout=200)
        assert p.returncode == 0, p.stdout
        assert seconds < 120, f"run {attempt} took {seconds:.0f} s"
        s = json.loads((the_run(work / "runs") / "summary.json").read_text())
        assert s["status"] == "completed" and s["epochs"] == 2 and s["lfw_accuracy"] is not None
        seqs = collective_sequences(work)
        assert seqs["rank0"] == seqs["rank1"] and len(seqs["rank0"]) >= 5


def test_a_rank_that_never_arrives_is_named_within_seconds(tmp_path, faces):
    """Rank 1 stalls in its verification share; rank 0 waits --collective-wait 3 s at the gather
    and the run fails naming the collective and the missing rank, not after a 300 s timeout."""
    out = tmp_path / "runs"
    p, seconds = arcbench(["run", "--device", "cpu", "--nproc", "2", "--epochs", "1", "--batch-size", "8",
                           "--backbone", "tiny_stall", "--train-data", str(faces / "train"),
                           "--val-data", str(faces / "verify"), "--val-pairs", str(faces / "pairs.txt"),
                           "--eval-batch-size", "16", "--collective-wait", "3", "--quiet", "--out", str(out),
                           "--master-port", str(free_port())], tmp_path, timeout=200,
                          extra_env={"TINY_STALL_RANK": "1", "TINY_STALL_SECONDS": "60"})
    assert p.returncode == 1, p.stdout
    assert seconds < 50, f"took {seconds:.0f} s to surface"
    s = json.loads((the_run(out) / "summary.json").read_text())
    assert s["status"] == "failed"
    assert "collective 'eval.embeddings.shapes'" in s["reason"] and "rank 1 did not arrive within 3 s" in s["reason"]


def test_bench_resets_peak_memory_between_grid_points(tmp_path):
    """batch 2 measured after batch 48 reports batch 2's peak, not the one left over from batch 48."""
    from click.testing import CliRunner

    from arcbench import plugin_manager
    from arcbench.cli import main

    plugin_manager.load_plugin_module("fakecards")
    try:
        result = CliRunner().invoke(main, ["bench", "--device", "fakecard", "--backbone", "tiny_mem",
                                           "--precision", "fp32", "--batch-size", "48,2", "--warmup", "1",
                                           "--steps", "2", "--classes", "10", "--out", str(tmp_path / "runs"),
                                           "--json"])
    finally:
        plugin_manager.unregister_plugin("fakecards")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("["):])
    peaks = {row["batch_size"]: row["peak_memory"] for row in rows}
    image = 3 * 112 * 112 * 4  # bytes of one fp32 input image, what tiny_mem charges to the card
    assert peaks == {48: 48 * image, 2: 2 * image}


def _sharded_eval_rank(rank, world, port, faces, out):
    """One rank of a sharded verification (spawned by the test below)."""
    import numpy as np
    import torch

    from arcbench.run import collectives
    from arcbench import registry
    from arcbench.verification.evaluate import evaluate
    from arcbench.verification.load import load_verification

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    device = registry.require_device("cpu")
    device.bind(rank)
    collectives.setup(device, rank, world, timeout=120, wait=60)
    try:
        torch.manual_seed(0)
        model = registry.create_backbone("mobilefacenet")
        vset = load_verification(val_data=str(faces / "verify"), val_pairs=str(faces / "pairs.txt"))
        result = evaluate(model, device, vset, batch_size=16, workers=0, progress=False, sharded=True)
        if rank == 0:
            np.save(out, result["distances"])
            (Path(str(out) + ".json")).write_text(json.dumps([result["accuracy"], result["accuracy_std"]]))
        else:
            assert result is None
    finally:
        collectives.teardown()


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_verification_equals_one_process_to_the_last_digit(tmp_path, faces, world):
    import numpy as np
    import torch
    import torch.multiprocessing as mp

    from arcbench import registry
    from arcbench.verification.evaluate import evaluate
    from arcbench.verification.load import load_verification

    out = tmp_path / "sharded.npy"
    mp.spawn(_sharded_eval_rank, args=(world, free_port(), faces, out), nprocs=world, join=True)
    torch.manual_seed(0)
    model = registry.create_backbone("mobilefacenet")
    vset = load_verification(val_data=str(faces / "verify"), val_pairs=str(faces / "pairs.txt"))
    device = registry.require_device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = evaluate(model, device, vset, batch_size=16, workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert vset.num_images > 16 * world  # every rank embedded at least one batch
    assert np.array_equal(np.load(out), single["distances"])
    assert json.loads(Path(str(out) + ".json").read_text()) == [single["accuracy"], single["accuracy_std"]]
