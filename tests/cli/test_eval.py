"""`evaluate` and `arcbench eval` end to end on small sets built in the test."""
from __future__ import annotations

import csv
import io
import json
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps

from arcbench import registry
from arcbench.cli import main
from arcbench.verification.evaluate import embed_batch
from arcbench.verification.evaluate import evaluate, printable, save_scores
from arcbench.verification.protocol import verification_metrics
from arcbench.data.preprocess import load_tensor
from arcbench.verification.load import load_verification

JSON_KEYS = {"accuracy", "accuracy_std", "best_thresholds", "val", "val_std", "far", "auc", "eer",
             "pairs_used", "pairs_skipped", "images_per_second", "name", "num_images"}


class Tiny(torch.nn.Module):
    """A fast stand-in backbone that counts the images it embeds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 16)
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 4)
        return self.fc(x.flatten(1))


def face(seed: int, person: int) -> Image.Image:
    """A synthetic 'photo': a per-person pattern plus per-photo noise, not square (like LFW crops)."""
    base = np.random.default_rng(person).integers(0, 255, (28, 24, 3)).astype(np.int16)
    noise = np.random.default_rng(1000 + seed).integers(-40, 40, (28, 24, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).resize((96, 112), Image.NEAREST)


PAIRS = """2\t3
A\t1\t2
A\t2\t3
B\t1\t2
A\t1\tB\t1
A\t2\tB\t2
A\t3\tC\t1
B\t1\t3
C\t1\t2
A\t1\t3
A\t1\tC\t2
B\t2\tC\t1
B\t3\tA\t4
"""


@pytest.fixture
def lfw(tmp_path):
    """An LFW-layout folder (A_0004 deliberately missing) and its pairs file."""
    root = tmp_path / "lfw"
    for person, (name, count) in enumerate([("A", 3), ("B", 3), ("C", 2)]):
        (root / name).mkdir(parents=True)
        for k in range(1, count + 1):
            face(10 * person + k, person).save(root / name / f"{name}_{k:04d}.jpg", quality=92)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(PAIRS)
    return root, pairs


@pytest.fixture
def cpu():
    return registry.require_device("cpu")


def test_evaluate_embeds_each_image_once_and_restores_the_model(lfw, cpu):
    vset = load_verification(*lfw)
    assert (len(vset), vset.pairs_skipped, vset.num_images) == (11, 1, 8)   # 22 image slots, 8 files
    model = Tiny().train()
    result = evaluate(model, cpu, vset, batch_size=3, workers=0, progress=False)
    assert model.seen == 8                              # each unique image once
    assert model.training                               # train mode restored
    assert all(p.is_contiguous() for p in model.parameters())   # memory format restored
    assert result["pairs_used"] == 11 and result["pairs_skipped"] == 1 and result["num_images"] == 8
    assert result["name"] == "LFW" and result["images_per_second"] > 0
    assert result["folds"].tolist() == [0] * 6 + [1] * 5
    assert JSON_KEYS <= set(printable(result)) and "distances" not in printable(result)
    json.dumps(printable(result))

    # distances are those of the plain per-pair pipeline (no dedup, no loader, no channels_last)
    model.eval()
    for (a, b), dist in zip(vset.pairs, result["distances"]):
        emb = embed_batch(model, torch.stack([load_tensor(vset.images[a]), load_tensor(vset.images[b])]))
        assert dist == pytest.approx(float(torch.dist(emb[0], emb[1])), abs=1e-5)

    model.eval().seen = 0
    flipped = evaluate(model, cpu, vset, flip=True, workers=0, progress=False, channels_last=False)
    assert model.seen == 16 and not model.training     # flip: two passes per image; eval mode kept
    assert not np.allclose(flipped["distances"], result["distances"])


def test_workers_give_the_same_distances(lfw, cpu):
    vset = load_verification(*lfw)
    model = Tiny()
    serial = evaluate(model, cpu, vset, batch_size=2, workers=0, progress=False)
    parallel = evaluate(model, cpu, vset, batch_size=2, workers=2, progress=False)
    np.testing.assert_allclose(parallel["distances"], serial["distances"], atol=1e-6)


def test_saved_scores_reproduce_the_accuracy_exactly(lfw, cpu, tmp_path):
    result = evaluate(Tiny(), cpu, load_verification(*lfw), workers=0, progress=False)
    path = tmp_path / "out" / "scores.csv"
    save_scores(path, result)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["pair", "fold", "distance", "issame"] and len(rows) == 11
    again = verification_metrics([float(r["distance"]) for r in rows], [r["issame"] == "1" for r in rows],
                                 folds=[int(r["fold"]) for r in rows])
    assert again["accuracy"] == result["accuracy"] and again["fold_accuracies"] == result["fold_accuracies"]
    assert [float(r["distance"]) for r in rows] == result["distances"].tolist()


def test_progress_bar_only_on_a_terminal(lfw, cpu, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    vset = load_verification(*lfw)
    for tty, progress, shown in [(True, True, True), (True, False, False), (False, True, False)]:
        err = Tty() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        evaluate(Tiny(), cpu, vset, workers=0, progress=progress)
        assert ("eval LFW" in err.getvalue()) is shown, (tty, progress)


def test_plots_write_pngs_atomically(tmp_path):
    from arcbench.record.plots import plot_lines, plot_roc

    plot_lines({"train": ([1, 2, 3], [3.0, 2.0, 1.5]), "val": ([3], [2.5])}, tmp_path / "p" / "loss.png",
               title="loss", xlabel="epoch", ylabel="loss")
    plot_roc([0, 0.1, 1], [0, 0.9, 1], tmp_path / "roc.png", auc=0.95)
    for name in ("p/loss.png", "roc.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["loss.png", "roc.png"]


# ------------------------------------------------------------------ the CLI

@pytest.fixture
def run(monkeypatch):
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)

    def invoke(*args):
        return CliRunner().invoke(main, ["eval", *map(str, args)])
    return invoke


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "mfn.pth"
    torch.save(registry.create_backbone("mobilefacenet").state_dict(), path)
    return path


def test_cli_on_a_bin_with_an_untrained_mobilefacenet(tmp_path, run, untrained_weights):
    def jpeg(img):
        buf = io.BytesIO()
        img.save(buf, "JPEG")
        return buf.getvalue()

    imgs = [jpeg(face(k, k // 2)) for k in range(6)]
    # pairs: (0,1) same, (2,3) same, (0,2) diff, (4,5) same, (1,3) diff, (5,0) diff -> images reused
    order = [0, 1, 2, 3, 0, 2, 4, 5, 1, 3, 5, 0]
    (tmp_path / "cfp_fp.bin").write_bytes(pickle.dumps(([imgs[i] for i in order],
                                                        [True, True, False, True, False, False])))
    result = run("--weights", untrained_weights, "--val-bin", tmp_path / "cfp_fp.bin", "--device", "cpu",
                 "--eval-batch-size", 4, "--json", "--workers", 0)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert JSON_KEYS <= set(out)
    assert (out["name"], out["pairs_used"], out["pairs_skipped"], out["num_images"]) == ("cfp_fp", 6, 0, 6)
    assert 0 <= out["accuracy"] <= 1 and len(out["best_thresholds"]) == 6 and out["device"] == "cpu"


@pytest.fixture
def real_lfw(reference_dir, tmp_path):
    """The reference photos (and mirrored copies) laid out as LFW: two people, four photos of P1."""
    root = tmp_path / "lfw"
    faces = reference_dir / "faces"
    for name, files in [("P1", ["1_001.jpg", "1_002.jpg"]), ("P2", ["2_001.jpg"])]:
        (root / name).mkdir(parents=True)
        k = 0
        for f in files:
            for mirror in (False, True):
                k += 1
                dst = root / name / f"{name}_{k:04d}.jpg"
                if mirror:
                    ImageOps.mirror(Image.open(faces / f)).save(dst, quality=95)
                else:
                    shutil.copy(faces / f, dst)
    pairs = tmp_path / "lfw_pair.txt"
    pos = ["P1\t1\t3", "P1\t1\t4", "P1\t2\t3", "P1\t2\t4", "P2\t1\t2", "P1\t1\t2"]
    neg = [f"P1\t{i}\tP2\t{j}" for i in range(1, 5) for j in (1, 2)][:6]
    pairs.write_text("2\t3\n" + "\n".join(pos[:3] + neg[:3] + pos[3:] + neg[3:]) + "\n")
    return root, pairs


def test_cli_with_the_reference_weights(reference_dir, real_lfw, run, tmp_path):
    root, pairs = real_lfw
    weights = reference_dir / "arcface_mobilefacenet.pth"
    scores, roc = tmp_path / "scores.csv", tmp_path / "roc.png"
    result = run("--weights", weights, "--val-data", root, "--val-pairs", pairs, "--device", "cpu",
                 "--json", "--save-scores", scores, "--roc", roc)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["name"], out["pairs_used"], out["num_images"]) == ("LFW", 12, 6)
    # Same person always closer than different people (the reference photos' known behaviour).
    assert out["auc"] == 1.0 and out["eer"] == 0.0
    with open(scores, newline="") as fh:
        rows = list(csv.DictReader(fh))
    d = np.array([float(r["distance"]) for r in rows])
    y = np.array([r["issame"] == "1" for r in rows])
    assert d[y].max() < 1.0 < d[~y].min()
    again = verification_metrics(d, y, folds=[int(r["fold"]) for r in rows])
    assert again["accuracy"] == out["accuracy"]
    assert roc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the cross-person distance matches `arcbench verify` on the same two photos
    verify = CliRunner().invoke(main, ["verify", str(reference_dir / "faces" / "1_001.jpg"),
                                       str(reference_dir / "faces" / "2_001.jpg"), "--weights", str(weights),
                                       "--json"])
    assert d[3] == pytest.approx(json.loads(verify.stdout)["distance"], abs=1e-4)   # line 5: P1 1 vs P2 1

    text = run("--weights", weights, "--val-data", root, "--val-pairs", pairs, "--device", "cpu",
               "--thresholds", "exact", "--flip")
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("LFW: accuracy 100.00% \u00b1 0.00%") and "12 pairs" in text.stdout
    # the FAR VAL is meant at, and why a 12-pair set cannot show it
    assert "@ FAR 0.10% (measured" in text.stdout and "too small for FAR 0.10%" in text.stdout


@pytest.mark.parametrize("args, message", [
    (["--val-data", "{root}"], "needs a pairs file"),
    (["--val-data", "{root}", "--val-pairs", "{tmp}/missing.txt"], "missing.txt: pairs file not found"),
    (["--val-data", "{root}", "--val-pairs", "{pairs}", "--strict"], "pairs.txt:13: image not found"),
    (["--val-bin", "{tmp}/x.bin", "--val-data", "{root}"], "not both"),
    (["--val-data", "{root}", "--val-pairs", "{pairs}", "--weights", "{tmp}/none.pth"], "checkpoint not found"),
    (["--val-data", "{root}", "--val-pairs", "{pairs}", "--backbone", "nope"], "unknown backbone 'nope'"),
])
def test_cli_errors_are_one_line(lfw, run, tmp_path, untrained_weights, args, message):
    root, pairs = lfw
    args = [a.format(root=root, pairs=pairs, tmp=tmp_path) for a in args]
    if "--weights" not in args:
        args += ["--weights", str(untrained_weights)]
    result = run(*args, "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("arcbench: error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


class Squeezed(torch.nn.Module):
    """Tiny's embedding shrunk by ``eps`` next to a constant axis: unit embeddings a distance
    of about ``eps`` apart, in the same order as Tiny's (an early model whose embeddings have
    barely spread)."""

    def __init__(self, eps: float):
        super().__init__()
        self.tiny, self.eps = Tiny(), eps

    def forward(self, x):
        e = torch.nn.functional.normalize(self.tiny(x), dim=1) * self.eps
        return torch.cat([torch.ones(len(x), 1), e], dim=1)


def test_distances_finer_than_the_grid_are_named_with_the_exact_figure(lfw, cpu):
    from arcbench.verification.protocol import grid_separates, verification_metrics

    assert not grid_separates([0.0001, 0.002, 0.0099]) and grid_separates([0.005, 0.015])
    assert not grid_separates([0.011, 0.0199]) and not grid_separates([0.3, 0.3])  # no threshold between
    vset = load_verification(*lfw)
    with pytest.warns(UserWarning, match="grid protocol reads chance") as caught:
        r = evaluate(Squeezed(1e-3), cpu, vset, workers=0, progress=False)
    assert r["distances"].max() < 0.01 and r["grid_unresolved"] is True
    exact = verification_metrics(r["distances"], vset.issame, folds=vset.folds, thresholds="exact")
    assert r["accuracy_exact"] == exact["accuracy"] and f"{exact['accuracy']:.4f}" in str(caught[0].message)
    spread = evaluate(Squeezed(1.0), cpu, vset, workers=0, progress=False)  # the same order, spread out
    assert "grid_unresolved" not in spread and "accuracy_exact" not in spread
