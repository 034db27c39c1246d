"""The synthetic face set: determinism, layout, pairs protocol, cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from arcbench.data import synth
from arcbench.data.index import read_annotation, scan_folder
from arcbench.errors import ArcbenchError

TINY = dict(identities=3, images_per_identity=2, verify_identities=20, verify_images=3, pairs=2)


def _files(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    summary = synth.generate(out, seed=7, workers=0, **TINY)
    return out, summary


def test_same_seed_is_byte_identical_whatever_the_workers(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    synth.generate(again, seed=7, workers=2, **TINY)  # a process pool, unordered completion
    a, b = _files(out), _files(again)
    assert a.keys() == b.keys() and a == b
    other = tmp_path / "other"
    synth.generate(other, seed=8, workers=0, **TINY)
    c = _files(other)
    assert c.keys() == a.keys()
    assert c["train/id00000/0.jpg"] != a["train/id00000/0.jpg"]
    assert c["pairs.txt"] != a["pairs.txt"] or c["verify/person_0000/person_0000_0001.jpg"] != \
        a["verify/person_0000/person_0000_0001.jpg"]


def test_layout(tiny):
    out, summary = tiny
    train = sorted(p.name for p in (out / "train").iterdir())
    verify = sorted(p.name for p in (out / "verify").iterdir())
    assert train == ["id00000", "id00001", "id00002"]
    assert len(verify) == 20 and not set(train) & set(verify)
    assert sorted(os.listdir(out / "train" / "id00001")) == ["0.jpg", "1.jpg"]
    assert sorted(os.listdir(out / "verify" / "person_0003")) == [
        "person_0003_0001.jpg", "person_0003_0002.jpg", "person_0003_0003.jpg"]
    with Image.open(out / "train" / "id00000" / "0.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (synth.WIDTH, synth.HEIGHT)
    paths, labels = read_annotation(out / "cls_train.txt")
    scan = scan_folder(out / "train")
    assert paths == scan.paths and labels == scan.labels == [0, 0, 1, 1, 2, 2]
    assert summary["train_images"] == 6 and summary["verify_total"] == 60
    assert (out / "synth.json").is_file()


def test_pairs_protocol(tiny):
    out, _ = tiny
    lines = (out / "pairs.txt").read_text().splitlines()
    assert lines[0] == "10\t2"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 10 * 2 * 2
    fold_people = []
    for f in range(10):
        fold = rows[f * 4:(f + 1) * 4]
        pos, neg = fold[:2], fold[2:]
        assert all(len(r) == 3 for r in pos) and all(len(r) == 4 for r in neg)  # balanced: n + n
        assert all(r[1] != r[2] for r in pos)
        assert all(r[0] != r[2] for r in neg)
        people = {r[0] for r in pos} | {r[0] for r in neg} | {r[2] for r in neg}
        fold_people.append(people)
        for r in pos:
            refs = [(r[0], r[1]), (r[0], r[2])]
            for name, i in refs:
                assert (out / "verify" / name / f"{name}_{int(i):04d}.jpg").is_file()
        for r in neg:
            for name, i in ((r[0], r[1]), (r[2], r[3])):
                assert (out / "verify" / name / f"{name}_{int(i):04d}.jpg").is_file()
    for i in range(10):  # folds are identity-disjoint, like LFW's
        for j in range(i + 1, 10):
            assert not fold_people[i] & fold_people[j]


def test_impossible_pair_counts_are_refused(tmp_path):
    with pytest.raises(ArcbenchError, match="pairs per fold"):
        synth.generate(tmp_path / "x", identities=1, images_per_identity=1, verify_identities=20,
                       verify_images=2, pairs=5, workers=0)
    with pytest.raises(ArcbenchError, match="at least 20"):
        synth.generate(tmp_path / "y", identities=1, images_per_identity=1, verify_identities=5,
                       verify_images=2, pairs=1, workers=0)


def test_refuses_to_mix_with_an_existing_set(tiny, tmp_path):
    out = tmp_path / "s"
    small = dict(TINY, verify_identities=0, pairs=0)
    synth.generate(out, workers=0, **small)
    with pytest.raises(ArcbenchError, match="already exists"):
        synth.generate(out, workers=0, **small)
    synth.generate(out, workers=0, overwrite=True, **dict(small, identities=2))
    assert sorted(os.listdir(out / "train")) == ["id00000", "id00001"]


def test_default_dataset_is_cached(tmp_path, monkeypatch):
    params = dict(TINY, identities=2)
    calls = []
    real = synth.generate
    monkeypatch.setattr(synth, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("ARCBENCH_CACHE", str(tmp_path / "cache"))
    first = synth.default_dataset(**params)
    again = synth.default_dataset(**params)
    assert first == again and len(calls) == 1
    assert first.parent == tmp_path / "cache" and first.name.startswith(f"synthfaces-v{synth.GENERATOR_VERSION}-")
    assert sorted(os.listdir(first.parent)) == [first.name]  # no temporary folder left behind
    assert read_annotation(first / "cls_train.txt")[0][0] == str(first / "train" / "id00000" / "0.jpg")
    other = synth.default_dataset(tmp_path / "c2", **dict(params, seed=1))
    assert other.parent == tmp_path / "c2" and other.name != first.name


def test_cli_defaults_match_the_generator():
    from arcbench.cli.data import SYNTH_DEFAULTS

    assert SYNTH_DEFAULTS == synth.DEFAULTS


def test_cli_synth_and_index(tmp_path):
    from click.testing import CliRunner

    from arcbench.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["data", "synth", "--out", str(tmp_path / "s"), "--identities", "2",
                               "--images-per-identity", "2", "--verify-identities", "0", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "2 identities x 2 = 4 images" in res.output
    res = runner.invoke(main, ["data", "index", str(tmp_path / "s" / "train"), "--out", str(tmp_path / "i.txt")])
    assert res.exit_code == 0, res.output
    assert "4 images, 2 identities" in res.output
    assert read_annotation(tmp_path / "i.txt")[1] == [0, 0, 1, 1]
    res = runner.invoke(main, ["data", "index", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_generation_in_a_pool_ends_under_a_sigterm_handler_that_does_not_exit(tmp_path):
    """A program (or an earlier run in this process) may hold a SIGTERM handler that only takes note;
    forked workers inherit it, and the pool's terminate() at the end must still end them."""
    import subprocess
    import sys

    script = (
        "import signal, sys\n"
        "from arcbench.data.synth import generate\n"
        "signal.signal(signal.SIGTERM, lambda *a: None)\n"
        "generate(sys.argv[1], identities=8, images_per_identity=6, verify_identities=20, verify_images=2,\n"
        "         pairs=2, workers=2)\n"
        "print('generated')\n")
    try:
        r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "set")], capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("generate() with a worker pool hung at the pool's end")
    assert r.returncode == 0 and "generated" in r.stdout, r.stderr
    assert len(list((tmp_path / "set" / "train").rglob("*.jpg"))) == 8 * 6
