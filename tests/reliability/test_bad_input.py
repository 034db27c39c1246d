"""Bad input of every kind: one line naming the file (and line), exit 2, no traceback.

Most cases run in-process through click's runner with the CLI's real error
handling; a few go through a real ``arcbench`` subprocess to prove the same
holds for the installed command.  Grayscale, RGBA, CMYK and palette images are
not bad input: they are converted and work.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from .conftest import (PLUGIN, assert_one_line_error, assert_result_error, cli, invoke, metrics_records,
                       only_run_dir, summary, train_args)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ------------------------------------------------------------------ files to break things with
def a_jpeg(faces: Path) -> Path:
    return next((faces / "verify").rglob("*.jpg"))


def truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 3])
    return dst


def not_an_image(dst: Path) -> Path:
    dst.write_text("this is a text file, not a JPEG\n")
    return dst


def converted(src: Path, dst: Path, mode: str) -> Path:
    Image.open(src).convert(mode).save(dst)
    return dst


class Payload:
    """Unpickling this runs ``touch MARKER``: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def verify_args(a, b, weights, *extra):
    return ["--plugin", PLUGIN, "verify", str(a), str(b), "--backbone", "reltiny", "--weights", str(weights),
            "--device", "cpu", *extra]


def eval_args(weights, *extra):
    return ["--plugin", PLUGIN, "eval", "--backbone", "reltiny", "--weights", str(weights), "--device", "cpu",
            "--eval-batch-size", "16", "--no-progress", *extra]


# ------------------------------------------------------------------ images: arcbench verify
@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_verify_bad_image_subprocess(faces, tmp_path, weights, kind):
    bad = truncated(a_jpeg(faces), tmp_path / "bad.jpg") if kind == "truncated" else not_an_image(tmp_path / "bad.jpg")
    r = cli(verify_args(bad, a_jpeg(faces), weights))
    line = assert_one_line_error(r.returncode, r.stderr, str(bad))
    assert "cannot decode image" in line


@pytest.mark.parametrize("kind", ["empty", "missing", "directory-named-jpg"])
def test_verify_other_bad_images(faces, tmp_path, weights, kind):
    bad = tmp_path / "bad.jpg"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "directory-named-jpg":
        bad = tmp_path / "folder.jpg"
        bad.mkdir()
    r = invoke(verify_args(bad, a_jpeg(faces), weights))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert str(bad) in r.stderr.splitlines()[-1]


@pytest.mark.parametrize("mode,ext", [("L", "jpg"), ("RGBA", "png"), ("CMYK", "jpg"), ("P", "png"),
                                      ("LA", "png"), ("I;16", "png"), ("1", "bmp")])
def test_verify_converts_other_colour_modes(faces, tmp_path, weights, mode, ext):
    img = converted(a_jpeg(faces), tmp_path / f"face.{ext}", mode)
    assert Image.open(img).mode == mode
    r = invoke(verify_args(img, a_jpeg(faces), weights, "--json"))
    assert r.exit_code == 0, r.output
    assert 0.0 <= json.loads(r.stdout)["distance"] <= 2.0

    from arcbench.data.preprocess import load_tensor

    t = load_tensor(str(img), 112)
    assert t.shape == (3, 112, 112) and torch.isfinite(t).all()


# ------------------------------------------------------------------ images: arcbench eval sets
@pytest.mark.parametrize("workers", [0, 1])
def test_eval_set_with_a_corrupt_image(faces_copy, weights, workers):
    victim = next((faces_copy / "verify").rglob("*.jpg"))
    truncated(a_jpeg(faces_copy), victim)
    r = invoke(eval_args(weights, "--val-data", faces_copy / "verify", "--val-pairs", faces_copy / "pairs.txt",
                         "--workers", workers))
    line = assert_result_error(r, victim.name)  # also through a DataLoader worker: no worker traceback
    assert "cannot decode image" in line and "Original Traceback" not in line


def test_eval_set_with_grayscale_rgba_cmyk_images_works(faces_copy, weights):
    jpgs = sorted((faces_copy / "verify").rglob("*.jpg"))
    converted(jpgs[0], jpgs[0], "L")
    converted(jpgs[1], jpgs[1], "CMYK")
    Image.open(jpgs[2]).convert("RGBA").save(jpgs[2], format="PNG")  # a PNG named .jpg, with alpha
    r = invoke(eval_args(weights, "--val-data", faces_copy / "verify", "--val-pairs", faces_copy / "pairs.txt",
                         "--json"))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["pairs_used"] == 60


def test_bin_with_a_corrupt_image_names_the_bin_and_image(faces, tmp_path, weights):
    good = a_jpeg(faces).read_bytes()
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([good, good[:40]] * 10, [True] * 10), protocol=2))
    r = invoke(eval_args(weights, "--val-bin", path))
    assert_result_error(r, str(path), "image 1", "cannot decode image")


# ------------------------------------------------------------------ images: training sets
def damaged_train_set(faces_copy: Path) -> Path:
    """train/ with 2 corrupt images (truncated, not an image) and 3 convertible ones."""
    train = faces_copy / "train"
    ids = sorted(p for p in train.iterdir() if p.is_dir())
    src = a_jpeg(faces_copy)
    truncated(src, ids[0] / "9.jpg")
    not_an_image(ids[1] / "9.jpg")
    converted(src, ids[2] / "9.jpg", "L")
    converted(src, ids[3] / "9.png", "RGBA")
    converted(src, ids[4] / "9.jpg", "CMYK")
    (faces_copy / "cls_train.txt").unlink()  # scan the folder
    return train


@pytest.mark.parametrize("workers", ["0", "1"])
def test_training_skips_and_counts_corrupt_images(faces_copy, tmp_path, workers):
    train = damaged_train_set(faces_copy)
    args = train_args(tmp_path / "runs", "--train-data", train)
    args[args.index("--workers") + 1] = workers
    r = invoke(args)
    assert r.exit_code == 0, r.output
    s = summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "completed"
    assert s["bad_images"] == 2  # the grayscale, RGBA and CMYK images are converted, not counted


@pytest.mark.slow
def test_training_fails_on_a_corrupt_image_with_fail_mode(faces_copy, tmp_path):
    train = damaged_train_set(faces_copy)
    r = cli(train_args(tmp_path / "runs", "--train-data", train, "--on-bad-image", "fail"))
    line = assert_one_line_error(r.returncode, r.stderr, str(train))
    assert "bad training image" in line
    s = summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "failed" and "bad training image" in s["reason"]


# ------------------------------------------------------------------ empty identity folders
def test_empty_identity_folder_is_skipped_with_a_one_line_warning(faces_copy, tmp_path):
    (faces_copy / "train" / "id_empty").mkdir()
    r = cli(train_args(tmp_path / "runs", "--train-data", faces_copy / "train"))
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "empty identity" in ln]
    assert len(warn) == 1 and warn[0].startswith("arcbench: warning: "), r.stderr
    assert "open_train_set(" not in r.stderr  # no source excerpt under the warning
    assert summary(only_run_dir(tmp_path / "runs"))["status"] == "completed"


def test_only_empty_identity_folders_is_an_error(tmp_path):
    root = tmp_path / "train"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    (root / "a" / "notes.txt").write_text("no images here")
    r = invoke(train_args(tmp_path / "runs", "--train-data", root))
    assert_result_error(r, str(root), "no images")
    r = invoke(["data", "index", root, "--out", tmp_path / "cls.txt"])
    assert_result_error(r, str(root), "no images")
    assert not (tmp_path / "cls.txt").exists()


# ------------------------------------------------------------------ annotation files
@pytest.mark.parametrize("bad_line,expect", [
    ("0 train/id00000/0.jpg", "expected '<label>;<image path>'"),
    ("x;train/id00000/0.jpg", "not an integer"),
    ("-1;train/id00000/0.jpg", "negative"),
    ("3;   ", "empty image path"),
])
def test_malformed_annotation_line(faces, tmp_path, bad_line, expect):
    ann = tmp_path / "cls_train.txt"
    good = (faces / "cls_train.txt").read_text().splitlines()
    ann.write_text("\n".join(good[:5] + [bad_line] + good[5:]) + "\n")
    r = invoke(train_args(tmp_path / "runs", "--train-data", faces, "--annotation", ann))
    assert_result_error(r, f"{ann}:6", expect)
    assert summary(only_run_dir(tmp_path / "runs"))["status"] == "failed"


def test_annotation_with_a_missing_image(faces, tmp_path):
    ann = tmp_path / "cls_train.txt"
    lines = [f"{lab};{faces / p}" for lab, p in
             (ln.split(";", 1) for ln in (faces / "cls_train.txt").read_text().splitlines())]
    lines.insert(3, f"0;{faces / 'train' / 'nobody' / 'gone.jpg'}")
    ann.write_text("\n".join(lines) + "\n")
    # default: skipped and counted like any bad image
    r = invoke(train_args(tmp_path / "a", "--train-data", faces, "--annotation", ann))
    assert r.exit_code == 0, r.output
    assert summary(only_run_dir(tmp_path / "a"))["bad_images"] == 1
    # fail mode: an error naming the annotation line, before any training
    r = invoke(train_args(tmp_path / "b", "--train-data", faces, "--annotation", ann, "--on-bad-image", "fail"))
    assert_result_error(r, f"{ann}:4", "gone.jpg")
    assert summary(only_run_dir(tmp_path / "b"))["status"] == "failed"


def test_annotation_that_is_not_text(faces, tmp_path):
    ann = tmp_path / "cls_train.txt"
    ann.write_bytes(b"\x00\xff\xfe\x89PNG garbage")
    r = invoke(train_args(tmp_path / "runs", "--train-data", faces, "--annotation", ann))
    assert_result_error(r, str(ann))


# ------------------------------------------------------------------ pairs files
PAIRS_CASES = {
    "wrong-columns": ("1 1\nperson_0000 1\nperson_0000 1 person_0001 1\n", ":2", "columns"),
    "too-many-columns": ("1 1\nperson_0000 1 2\nperson_0000 1 person_0001 1 extra\n", ":3", "columns"),
    "bad-header": ("ten 300\n", ":1", "header"),
    "zero-header": ("0 3\n", ":1", "header"),
    "short-body": ("10 300\nperson_0000 1 2\n", ":1", "promises"),
    "non-integer-index": ("person_0000 1 x\nperson_0000 1 person_0001 2\n", ":1", "integer"),
    "negative-index": ("person_0000 -1 2\nperson_0000 1 person_0001 2\n", ":1", "negative"),
    "path-in-name": ("../etc 1 2\nperson_0000 1 person_0001 2\n", ":1", "bad person name"),
    "binary": (b"\xff\xfe\x00\x89garbage", "", "not a text pairs file"),
    "empty": ("", "", "empty"),
}


@pytest.mark.parametrize("case", sorted(PAIRS_CASES))
def test_malformed_pairs_file_in_eval(faces, tmp_path, weights, case):
    text, where, expect = PAIRS_CASES[case]
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(text if isinstance(text, bytes) else text.encode())
    r = invoke(eval_args(weights, "--val-data", faces / "verify", "--val-pairs", pairs))
    assert_result_error(r, f"{pairs}{where}", expect)


def test_malformed_pairs_file_in_run_fails_before_training(faces, tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("10 3\nperson_0000 1 x\n")
    r = cli(train_args(tmp_path / "runs", "--train-data", faces / "train", "--val-data", faces / "verify",
                       "--val-pairs", pairs))
    assert_one_line_error(r.returncode, r.stderr, f"{pairs}:2")
    # read before a run directory is made: no failed run is left behind for it
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ------------------------------------------------------------------ verification .bin files
def bin_cases(jpeg: bytes, marker: Path):
    return {
        "dict": pickle.dumps({"images": [jpeg]}),
        "three-tuple": pickle.dumps(([jpeg, jpeg], [True], "x")),
        "count-mismatch": pickle.dumps(([jpeg] * 3, [True, False])),
        "not-bytes": pickle.dumps(([jpeg, 42], [True])),
        "bad-issame": pickle.dumps(([jpeg, jpeg], ["yes"])),
        "no-pairs": pickle.dumps(([], [])),
        "not-a-pickle": b"PK\x03\x04 a zip, not a pickle",
        "truncated": pickle.dumps(([jpeg, jpeg], [True]))[:-30],
        "os-system": pickle.dumps(([jpeg, jpeg], [Payload(marker)]), protocol=2),
        "os-system-proto0": pickle.dumps(([jpeg, jpeg], [Payload(marker)]), protocol=0),
        "eval": b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.",
        "numpy": pickle.dumps((torch.zeros(2).numpy(), [True])),
    }


@pytest.mark.parametrize("case", ["dict", "three-tuple", "count-mismatch", "not-bytes", "bad-issame", "no-pairs",
                                  "not-a-pickle", "truncated", "os-system", "os-system-proto0", "eval", "numpy"])
def test_bad_bin(faces, tmp_path, weights, case):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / f"{case}.bin"
    path.write_bytes(bin_cases(a_jpeg(faces).read_bytes(), marker)[case])
    r = invoke(eval_args(weights, "--val-bin", path))
    line = assert_result_error(r, str(path))
    if case in ("os-system", "os-system-proto0", "eval", "numpy"):
        assert "refusing" in line
    assert not marker.exists(), "the pickle's payload ran"


# ------------------------------------------------------------------ checkpoints
def checkpoint_cases(tmp_path: Path, weights: Path, marker: Path) -> dict:
    good = torch.load(weights, weights_only=True)
    cases = {}

    def save(name, obj):
        cases[name] = tmp_path / f"{name}.pth"
        torch.save(obj, cases[name])

    save("wrong-keys", {"conv.weight": torch.zeros(3)})
    save("wrong-shapes", {k: torch.zeros(2, *v.shape) for k, v in good.items()})
    save("missing-key", {k: v for i, (k, v) in enumerate(good.items()) if i})
    save("not-tensors", {"fc.weight": [1, 2, 3]})
    save("code", {"state": Payload(marker)})
    save("numpy-legacy", {k: v.numpy() for k, v in good.items()})
    cases["text"] = tmp_path / "text.pth"
    cases["text"].write_text("not a checkpoint")
    cases["truncated"] = tmp_path / "truncated.pth"
    cases["truncated"].write_bytes(weights.read_bytes()[:300])
    cases["empty"] = tmp_path / "empty.pth"
    cases["empty"].write_bytes(b"")
    cases["missing"] = tmp_path / "missing.pth"
    return cases


CKPT_EXPECT = {"wrong-keys": "missing keys", "wrong-shapes": "shape mismatch", "missing-key": "missing keys",
               "not-tensors": "not a state dict", "code": "refusing to load", "numpy-legacy": "refusing to load",
               "text": "cannot read checkpoint", "truncated": "cannot read checkpoint",
               "empty": "cannot read checkpoint", "missing": "not found"}


@pytest.mark.parametrize("case", sorted(CKPT_EXPECT))
def test_bad_checkpoint_in_eval(faces, tmp_path, weights, case):
    marker = tmp_path / "PAYLOAD_RAN"
    path = checkpoint_cases(tmp_path, weights, marker)[case]
    r = invoke(eval_args(path, "--val-data", faces / "verify", "--val-pairs", faces / "pairs.txt"))
    assert_result_error(r, str(path), CKPT_EXPECT[case])
    assert not marker.exists(), "the checkpoint's payload ran"


def test_code_carrying_checkpoint_subprocess(faces, tmp_path, weights):
    marker = tmp_path / "PAYLOAD_RAN"
    path = checkpoint_cases(tmp_path, weights, marker)["code"]
    r = cli(verify_args(a_jpeg(faces), a_jpeg(faces), path))
    line = assert_one_line_error(r.returncode, r.stderr, str(path), "refusing to load", "posix.system")
    assert "weights_only" in line
    assert not marker.exists(), "the checkpoint's payload ran"


@pytest.mark.parametrize("case", ["wrong-shapes", "code"])
def test_bad_checkpoint_as_fine_tuning_start(faces, tmp_path, weights, case):
    marker = tmp_path / "PAYLOAD_RAN"
    path = checkpoint_cases(tmp_path, weights, marker)[case]
    r = invoke(train_args(tmp_path / "runs", "--train-data", faces / "train", "--weights", path))
    assert_result_error(r, str(path), CKPT_EXPECT[case])
    assert summary(only_run_dir(tmp_path / "runs"))["status"] == "failed"
    assert not marker.exists()


def _first_loss(run_dir: Path) -> float:
    return next(rec["data"]["train.loss"] for rec in metrics_records(run_dir)
                if rec.get("type") == "LOG" and len(rec.get("step") or []) == 2 and "train.loss" in rec["data"])


def test_fine_tuning_start_weights_are_loaded(faces, tmp_path, weights):
    """The same seeded run with and without ``--weights``: only the start weights differ, so the first loss must."""
    losses = {}
    for name, extra in (("scratch", []), ("tuned", ["--weights", weights])):
        r = invoke(train_args(tmp_path / name, "--train-data", faces / "train", "--max-steps", "2", *extra))
        assert r.exit_code == 0, r.output
        losses[name] = _first_loss(only_run_dir(tmp_path / name))
    assert losses["tuned"] != losses["scratch"], losses
    again = tmp_path / "again"
    assert invoke(train_args(again, "--train-data", faces / "train", "--max-steps", "2")).exit_code == 0
    assert _first_loss(only_run_dir(again)) == losses["scratch"], "the scratch run is not reproducible"


@pytest.mark.parametrize("case", ["code", "wrong-shapes", "truncated", "not-an-arcbench-checkpoint"])
def test_bad_training_checkpoint_on_resume(faces, tmp_path, weights, case):
    marker = tmp_path / "PAYLOAD_RAN"
    out = tmp_path / "runs"
    r = invoke(train_args(out, "--train-data", faces / "train", "--run-id", "r1"))
    assert r.exit_code == 0, r.output
    last = out / "r1" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    if case == "code":
        state["history"] = {"loss": [Payload(marker)]}
        torch.save(state, last)
    elif case == "wrong-shapes":
        state["backbone"] = {k: torch.zeros(1, *v.shape) for k, v in state["backbone"].items()}
        torch.save(state, last)
    elif case == "truncated":
        last.write_bytes(last.read_bytes()[:500])
    else:
        torch.save(torch.load(weights, weights_only=True), last)
    r = invoke(train_args(out, "--resume", out / "r1", "--epochs", "2"))
    assert_result_error(r, str(last))
    assert summary(out / "r1")["status"] == "failed"
    assert not marker.exists()


# ------------------------------------------------------------------ paths that do not exist
def test_missing_paths_in_run(faces, tmp_path):
    out = tmp_path / "runs"
    nope = tmp_path / "nope"
    cases = [
        (["--train-data", nope], "--train-data"),
        (["--train-data", faces / "train", "--annotation", nope], "--annotation"),
        (["--train-data", faces / "train", "--val-data", nope, "--val-pairs", faces / "pairs.txt"], "--val-data"),
        (["--train-data", faces / "train", "--val-data", faces / "verify", "--val-pairs", nope], "--val-pairs"),
        (["--train-data", faces / "train", "--val-bin", nope], "--val-bin"),
        (["--train-data", faces / "train", "--weights", nope], "--weights"),
        (["--resume", nope], "--resume"),
    ]
    for args, flag in cases:
        r = invoke(train_args(out, *args))
        assert_result_error(r, str(nope), flag)
    assert not out.exists() or not any(out.iterdir()), "a bad path must fail before a run dir is made"


def test_missing_paths_subprocess(tmp_path, weights):
    nope = tmp_path / "nope.pairs"
    r = cli(eval_args(weights, "--val-data", tmp_path, "--val-pairs", nope))
    assert_one_line_error(r.returncode, r.stderr, str(nope), "not found")


def test_missing_paths_in_eval_verify_and_data(faces, tmp_path, weights):
    nope = tmp_path / "nope"
    for args in (eval_args(nope, "--val-data", faces / "verify", "--val-pairs", faces / "pairs.txt"),
                 eval_args(weights, "--val-data", nope, "--val-pairs", faces / "pairs.txt"),
                 eval_args(weights, "--val-bin", nope),
                 verify_args(nope, a_jpeg(faces), weights),
                 verify_args(a_jpeg(faces), a_jpeg(faces), nope),
                 ["data", "index", nope, "--out", tmp_path / "cls.txt"]):
        r = invoke(args)
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and str(nope) in r.stderr.strip().splitlines()[-1], r.stderr


# ------------------------------------------------------------------ unknown names
@pytest.mark.parametrize("flag,name,known", [("--device", "tpu9", "cpu"), ("--backbone", "resnet9000", "reltiny"),
                                             ("--head", "sphereface", "arcface")])
def test_unknown_names(tmp_path, flag, name, known):
    args = train_args(tmp_path / "runs", "--train-data", "synthetic")
    if flag in args:
        args[args.index(flag) + 1] = name
    else:
        args += [flag, name]
    line = assert_result_error(invoke(args), name, known)
    assert "unknown" in line
    assert not (tmp_path / "runs").exists()


def test_unknown_names_in_eval_and_verify_subprocess(faces, weights):
    r = cli(eval_args(weights, "--val-data", faces / "verify", "--val-pairs", faces / "pairs.txt",
                      "--backbone", "nosuchnet"))
    assert_one_line_error(r.returncode, r.stderr, "nosuchnet", "mobilefacenet")
    r = invoke(verify_args(a_jpeg(faces), a_jpeg(faces), weights, "--device", "abacus"))
    assert_result_error(r, "abacus", "cpu")


def test_unknown_plugin_module():
    r = invoke(["--plugin", "no_such_module_xyz", "plugins"])
    assert_result_error(r, "no_such_module_xyz")


# ------------------------------------------------------------------ invalid numbers
@pytest.mark.parametrize("extra,expect", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--batch_size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["--max-steps", "0"], "--max-steps"),
    (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--nproc", "0"], "--nproc"),
    (["--nproc", "3", "--batch_size", "10"], "split evenly"),
    (["--workers", "-1"], "--workers"),
    (["--checkpoint-steps", "-1"], "--checkpoint"),
    (["--margin-s", "0"], "--margin-s"),
    (["--grad-clip", "-1"], "--grad-clip"),
    (["--warmup-steps", "-1"], "--warmup-steps"),
    (["--master-port", "70000"], "--master-port"),
    (["--synthetic-classes", "0"], "--synthetic-classes"),
    (["--node-rank", "1"], "--node-rank"),
])
def test_invalid_numbers(tmp_path, extra, expect):
    args = train_args(tmp_path / "runs", "--train-data", "synthetic")
    i = args.index("--batch-size")
    if "--batch_size" in extra:
        del args[i:i + 2]
    args += extra
    assert_result_error(invoke(args), expect)
    assert not (tmp_path / "runs").exists(), "invalid settings must fail before a run dir is made"


def test_more_processes_than_devices(tmp_path):
    # cuda without a GPU: unavailable, whatever --nproc says
    if not torch.cuda.is_available():
        r = invoke(train_args(tmp_path / "runs", "--train-data", "synthetic", "--device", "cuda", "--nproc", "2"))
        assert_result_error(r, "cuda", "unavailable")
    # more cpu processes than cores
    n = (os.cpu_count() or 1) + 1
    r = cli(train_args(tmp_path / "runs", "--train-data", "synthetic", "--nproc", n))
    assert_one_line_error(r.returncode, r.stderr, f"--nproc {n}", "cpu")
    assert not (tmp_path / "runs").exists()


def test_eval_batch_size_and_threshold_are_checked(faces, weights):
    r = invoke(eval_args(weights, "--val-data", faces / "verify", "--val-pairs", faces / "pairs.txt",
                         "--eval-batch-size", "0"))
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_debug_shows_the_traceback(tmp_path):
    r = cli(["--debug"] + train_args(tmp_path / "runs", "--train-data", tmp_path / "nope"))
    assert r.returncode != 0 and "Traceback" in r.stderr and "ArcbenchError" in r.stderr


def test_resuming_a_run_whose_config_json_is_torn_is_one_line(tmp_path):
    """A config.json cut short (a disk filled up, an editor crashed) is one line naming the file."""
    run = tmp_path / "runs" / "torn"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"mode": "train", "backbone": "mobilefacenet", "batch_s')
    r = invoke(["run", "--resume", str(run)])
    assert r.exit_code == 2, r.output
    assert "cannot read run config" in r.output and "config.json" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
