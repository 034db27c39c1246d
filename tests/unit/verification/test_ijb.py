"""The IJB-B/C 1:1 template protocol: alignment, pooling, TAR at FAR, the command, bad input.

The pooling and TAR@FAR are checked on a case worked by hand (3 templates, 5 pairs); alignment
must undo the transforms ``data synth --ijb`` planted; the real reference checkpoint is evaluated
on a synthetic mini set.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from arcbench.cli import main

cv2 = pytest.importorskip("cv2", reason="IJB alignment needs opencv-python-headless (the ijb extra)")

from arcbench.verification.ijb import align as ijb_align  # noqa: E402
from arcbench.verification.ijb.protocol import pool_templates, pair_scores, roc, tar_at_far  # noqa: E402


# ---------------------------------------------------------------- hand-worked pooling and TAR@FAR
def test_template_pooling_by_hand():
    # template 1: media 10 has two faces (averaged), media 11 one face; the two media are summed
    feats = np.array([[2.0, 0.0], [0.0, 2.0],   # t1 m10 -> mean (1, 1)
                      [1.0, 0.0],               # t1 m11 -> (1, 0); t1 = (2, 1) / sqrt(5)
                      [0.0, 3.0],               # t2 m20 -> (0, 3);  t2 = (0, 1)
                      [4.0, 4.0], [5.0, 5.0]])  # t3 m30, m31 (one face each) -> (9, 9); t3 = (1, 1)/sqrt(2)
    templates = np.array([1, 1, 1, 2, 3, 3])
    medias = np.array([10, 10, 11, 20, 30, 31])
    tids, t = pool_templates(feats, templates, medias)
    assert tids.tolist() == [1, 2, 3]
    np.testing.assert_allclose(t[0], np.array([2, 1]) / np.sqrt(5), atol=1e-6)
    np.testing.assert_allclose(t[1], [0, 1], atol=1e-6)
    np.testing.assert_allclose(t[2], np.array([1, 1]) / np.sqrt(2), atol=1e-6)
    # a skipped face is left out of its media's mean
    _, t_keep = pool_templates(feats, templates, medias, keep=np.array([True, False, True, True, True, True]))
    np.testing.assert_allclose(t_keep[0], np.array([3, 0]) / 3, atol=1e-6)  # (2,0) + (1,0)


def test_scores_and_tar_at_far_by_hand():
    s5, s2 = 1 / np.sqrt(5), 1 / np.sqrt(2)
    tids = np.array([1, 2, 3])
    t = np.array([[2 * s5, s5], [0, 1], [s2, s2]], dtype=np.float32)
    pairs = np.array([[1, 3], [2, 3], [1, 2], [1, 1], [2, 9]])   # (2, 9): template 9 has no face
    scores, usable = pair_scores(tids, t, pairs, batch=2)         # batches of 2 pairs: 3 batches
    expect = [3 * s5 * s2, s2, s5, 1.0]                           # 0.9487, 0.7071, 0.4472, 1.0
    np.testing.assert_allclose(scores[:4], expect, rtol=1e-6)
    assert usable.tolist() == [True, True, True, True, False] and np.isnan(scores[4])
    # labels: (1,3) genuine, (2,3) impostor, (1,2) impostor, (1,1) genuine
    # sorted by score: 1.0 (g), 0.9487 (g), 0.7071 (i), 0.4472 (i)
    # one point per distinct score: (fp, tp) = (0,1) (0,2) (1,2) (2,2); (1,2) lies on the straight run
    # from (0,2) to (2,2) and is dropped (as sklearn's roc_curve drops it); (0,0) goes first
    fpr, tpr, _ = roc(np.array([1, 0, 0, 1]), scores[:4])
    assert fpr.tolist() == [0.0, 0.0, 0.0, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    tars = tar_at_far(fpr, tpr, (1e-4, 0.4, 0.6))
    assert tars[1e-4]["tar"] == 1.0        # nearest FAR 0: of the two points there, the larger TAR
    assert tars[0.4]["tar"] == 1.0 and tars[0.4]["far"] == 0.0
    assert tars[0.6]["far"] == 1.0         # nearer to 1 than to 0
    # a harder ordering: g 0.9, i 0.8, g 0.7, i 0.6, g 0.5 -> TARs known by hand
    fpr, tpr, _ = roc(np.array([1, 0, 1, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert fpr.tolist() == [0, 0, .5, .5, 1, 1] and np.allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    tars = tar_at_far(fpr, tpr, (1e-3, 0.3, 0.5, 0.9))
    assert tars[1e-3]["tar"] == pytest.approx(1 / 3)   # FAR 0: TAR 1/3 (the first genuine above all)
    assert tars[0.3]["tar"] == pytest.approx(2 / 3)    # nearest FAR 0.5: largest TAR there
    assert tars[0.5]["tar"] == pytest.approx(2 / 3)
    assert tars[0.9]["tar"] == 1.0


def test_roc_matches_a_direct_threshold_sweep():
    """Every ROC point is a threshold's (FAR, TAR), computed here pair by pair."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.8, 0.5), 2)  # rounded: many ties
    fpr, tpr, thr = roc(labels, scores)
    for f, t, th in zip(fpr[1:], tpr[1:], thr[1:]):
        accept = scores >= th
        assert f == pytest.approx(accept[labels == 0].mean()) and t == pytest.approx(accept[labels == 1].mean())


# ------------------------------------------------------------------------------------ alignment
def test_alignment_puts_planted_landmark_marks_on_the_template():
    """A dot drawn at a template point, warped by a planted similarity into a loose crop: after
    alignment from the planted landmarks, the dot's centroid lies within 1 px of its point."""
    from arcbench.data.synth_ijb import LOOSE, planted_transform

    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:112, 0:112]
    for _ in range(5):
        matrix = planted_transform(rng)
        landmarks = ijb_align.apply(matrix, ijb_align.ARCFACE_TEMPLATE)
        for x, y in ijb_align.ARCFACE_TEMPLATE:
            face = np.zeros((112, 112, 3), np.uint8)
            cv2.circle(face, (int(round(x * 16)), int(round(y * 16))), 48, (255, 255, 255), -1, shift=4)
            crop = cv2.warpAffine(face, matrix, (LOOSE, LOOSE), flags=cv2.INTER_LINEAR)
            w = ijb_align.align(crop, landmarks).astype(np.float64).mean(axis=2)
            cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
            assert abs(cx - x) < 1 and abs(cy - y) < 1, (cx, cy, x, y)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    from arcbench.data.synth_ijb import generate_ijb

    root = tmp_path_factory.mktemp("ijb")
    generate_ijb(root, identities=5, media=4, seed=1)
    return root


def test_synthetic_set_alignment_undoes_the_planted_transforms(mini):
    from PIL import Image

    from arcbench.verification.ijb.meta import read_meta
    from arcbench.data.synth_ijb import aligned_face, read_planted

    meta = read_meta(mini)
    planted = read_planted(mini)
    assert meta.name == "synthetic-IJB" and meta.num_faces == len(planted)
    for i, name in enumerate(meta.images[:8]):
        m = ijb_align.estimate(meta.landmarks[i])
        # the estimate is the planted transform's inverse: the landmarks land on the template
        assert np.abs(ijb_align.apply(m, meta.landmarks[i]) - ijb_align.ARCFACE_TEMPLATE).max() < 1.0
        planted_m = np.array(planted[name]["matrix"])
        inv = cv2.invertAffineTransform(planted_m)
        np.testing.assert_allclose(m, inv, atol=2e-3)  # landmarks were written with 3 decimals
        # and the aligned crop is the drawn face again (two bilinear resamplings and a JPEG apart)
        crop = np.asarray(Image.open(meta.image_dir + "/" + name).convert("RGB"))
        aligned = ijb_align.align(crop, meta.landmarks[i]).astype(float)
        gid = 2_000_000 + planted[name]["identity"]
        k = [n for n in meta.images if planted[n]["identity"] == planted[name]["identity"]].index(name)
        drawn = aligned_face(1, gid, k).astype(float)
        inner = (slice(6, 106), slice(6, 106))
        assert np.abs(aligned[inner] - drawn[inner]).mean() < 8, name


# ------------------------------------------------------------------------------- the command
def ijb(args, expect=0):
    res = CliRunner().invoke(main, ["eval-ijb", "--device", "cpu", "--workers", "0", *args])
    assert res.exit_code == expect, res.output + repr(res.exception)
    return res


@pytest.mark.reference
def test_reference_checkpoint_on_a_synthetic_ijb_set(mini, reference_dir, tmp_path):
    weights = str(reference_dir / "arcface_mobilefacenet.pth")
    out = tmp_path / "out"
    r = json.loads(ijb(["--root", str(mini), "--weights", weights, "--out", str(out), "--json"]).output)
    assert r["name"] == "synthetic-IJB" and r["faces_used"] == r["faces"] and r["variant"] == "N1D1F1"
    assert r["pairs_used"] == 25 and r["genuine_pairs"] == 5
    assert set(r["tar_at_far"]) == {"1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"}
    assert r["auc"] > 0.8  # real weights tell synthetic identities apart far better than chance (0.5)
    for f in ("result.json", "tar_far.csv", "roc.png", "embeddings.npy", "status.npy", "embeddings.json"):
        assert (out / f).is_file(), f
    # the figures are the protocol's on the cached embeddings, recomputed here directly
    from arcbench.verification.ijb.meta import read_meta

    meta = read_meta(mini)
    feats = np.load(out / "embeddings.npy")
    x = feats * meta.scores[:, None]
    tids, t = pool_templates(x, meta.templates, meta.medias)
    scores, _ = pair_scores(tids, t, meta.pairs)
    fpr, tpr, _ = roc(meta.labels, scores)
    assert r["tar_at_far"]["1e-01"] == tar_at_far(fpr, tpr, (0.1,))[0.1]["tar"]
    # --resume reuses every cached face: the same figures, nothing embedded again
    again = ijb(["--root", str(mini), "--weights", weights, "--out", str(out), "--resume"])
    assert f"{r['faces']} of {r['faces']} faces already embedded" in again.output
    assert json.loads((out / "result.json").read_text())["tar_at_far"] == r["tar_at_far"]
    # an interrupted evaluation (half the faces done) resumes to the same figures
    status = np.load(out / "status.npy", mmap_mode="r+")
    status[len(status) // 2:] = 0
    status.flush()
    del status
    half = ijb(["--root", str(mini), "--weights", weights, "--out", str(out), "--resume", "--json"])
    assert json.loads(half.output)["tar_at_far"] == r["tar_at_far"]
    # the other variant (no detector score) is a flag away
    d0 = json.loads(ijb(["--root", str(mini), "--weights", weights, "--out", str(out), "--resume",
                         "--no-detector-score", "--json"]).output)
    assert d0["variant"] == "N1D0F1"


# ------------------------------------------------------------------------------------ bad input
@pytest.fixture()
def copy(mini, tmp_path):
    root = tmp_path / "ijb"
    shutil.copytree(mini, root)
    return root


def _meta_file(root: Path, part: str) -> Path:
    return next((root / "meta").glob(f"*_{part}.txt"))


def test_malformed_meta_lines_name_the_file_and_line(copy, tmp_path):
    from arcbench.verification.ijb.meta import read_meta
    from arcbench.errors import ArcbenchError

    pairs = _meta_file(copy, "template_pair_label")
    lines = pairs.read_text().splitlines()
    lines[2] = "1 x 0"
    pairs.write_text("\n".join(lines) + "\n")
    with pytest.raises(ArcbenchError) as e:
        read_meta(copy)
    assert f"{pairs}:3" in str(e.value) and "whole numbers" in str(e.value)
    res = ijb(["--root", str(copy), "--weights", str(pairs), "--out", str(tmp_path / "o")], expect=2)
    assert f"{pairs}:3" in res.output and len(res.output.strip().splitlines()) == 1

    lmk = _meta_file(copy, "name_5pts_score")
    lines = lmk.read_text().splitlines()
    lines[4] = " ".join(lines[4].split()[:-1])  # a field short
    lmk.write_text("\n".join(lines) + "\n")
    pairs.write_text(pairs.read_text().replace("1 x 0", "1 2 0"))
    with pytest.raises(ArcbenchError, match=f"{lmk}:5: expected 12 fields"):
        read_meta(copy)


def test_unusable_faces_are_skipped_and_counted(copy, tmp_path):
    from arcbench.verification.ijb.meta import read_meta
    from arcbench.verification.ijb.embed import OK, OUTSIDE, MISSING, ZERO_SCORE, _AlignedFaces, precheck

    meta = read_meta(copy)
    (Path(meta.image_dir) / meta.images[0]).unlink()                 # a missing crop
    lmk = _meta_file(copy, "name_5pts_score")
    lines = lmk.read_text().splitlines()
    f = lines[1].split()
    f[1] = "-100.0"                                                  # a landmark far left of the crop
    lines[1] = " ".join(f)
    f = lines[3].split()
    f[1] = "-3.0"                                                    # just outside: still aligned
    lines[3] = " ".join(f)
    f = lines[2].split()
    f[-1] = "0.0"                                                    # a zero-score face
    lines[2] = " ".join(f)
    lmk.write_text("\n".join(lines) + "\n")
    meta = read_meta(copy)
    faces = _AlignedFaces(meta, 112)
    assert faces[0][2] == MISSING and faces[1][2] == OUTSIDE and faces[3][2] == OK
    assert precheck(meta)[2] == ZERO_SCORE
    import os

    weights = tmp_path / "w.pth"
    import torch

    from arcbench.registry import create_backbone

    torch.manual_seed(0)
    torch.save(create_backbone("mobilefacenet").state_dict(), weights)
    r = json.loads(ijb(["--root", str(copy), "--weights", str(weights), "--out", str(tmp_path / "o"),
                        "--json"]).output)
    assert r["faces_skipped"] == {"crop missing": 1, "landmarks outside the crop": 1,
                                  "detector score not above 0": 1}
    assert r["faces_used"] == r["faces"] - 3
    assert os.path.isfile(tmp_path / "o" / "roc.png")
    # the cache is never reused for other weights
    torch.manual_seed(1)
    torch.save(create_backbone("mobilefacenet").state_dict(), tmp_path / "other.pth")
    res = ijb(["--root", str(copy), "--weights", str(tmp_path / "other.pth"), "--out", str(tmp_path / "o"),
               "--resume"], expect=2)
    assert "other weights or settings" in res.output and len(res.output.strip().splitlines()) == 1


def test_detector_weighting_and_the_whole_scoring_path_by_hand():
    """Planted face embeddings through ``score_meta``: the detector score weighs a face inside its
    media's mean (D1), or not (D0); scores and TARs worked by hand."""
    from arcbench.verification.ijb.meta import IJBMeta
    from arcbench.verification.ijb.embed import OK, ZERO_SCORE
    from arcbench.verification.ijb.evaluate import score_meta

    feats = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 3.0], [1.0, 1.0], [7.0, -7.0]])
    meta = IJBMeta(name="hand", root="", image_dir="", images=[f"{i}.jpg" for i in range(6)],
                   templates=np.array([1, 1, 1, 2, 3, 3]), medias=np.array([10, 10, 11, 20, 30, 30]),
                   landmarks=np.zeros((6, 5, 2), np.float32),
                   scores=np.array([1.0, 0.5, 1.0, 1.0, 0.5, 0.0], np.float32),
                   pairs=np.array([[1, 2], [1, 3], [2, 3], [1, 1], [3, 3]]), labels=np.array([0, 1, 0, 1, 1], np.int8))
    status = np.array([OK, OK, OK, OK, OK, ZERO_SCORE])  # the zero-score face is skipped, not averaged in
    # D1: m10 = mean((2,0), (0,1)) = (1, .5); t1 = (1,.5) + (1,0) = (2,.5); t2 = (0,1); t3 = (1,1)
    d1 = score_meta(meta, feats, status)
    n1 = np.hypot(2, .5)
    np.testing.assert_allclose(d1["scores"], [.5 / n1, 2.5 / (n1 * np.sqrt(2)), 1 / np.sqrt(2), 1, 1], rtol=1e-6)
    # D0: m10 = (1,1); t1 = (2,1)
    d0 = score_meta(meta, feats, status, detector_score=False)
    np.testing.assert_allclose(d0["scores"][:3], [1 / np.sqrt(5), 3 / np.sqrt(10), 1 / np.sqrt(2)], rtol=1e-6)
    # genuine 1, 1, .86 all above the impostors .71, .24: TAR 1 at every FAR; 1 face skipped
    assert set(d1["tar_at_far"].values()) == {1.0} and d1["faces_skipped"] == {"detector score not above 0": 1}
    assert d1["genuine_pairs"] == 3 and d1["impostor_pairs"] == 2 and d1["faces_used"] == 5
