"""`arcbench export` and the onnxruntime engine in eval and verify, on the real reference weights and photos."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from testutil import cli_ok as _ok, cli_one_line_error as _one_line_error, cli_run as _run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

PAIRS = [("1_001.jpg", "1_002.jpg"), ("1_001.jpg", "2_001.jpg"), ("1_002.jpg", "2_001.jpg")]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)


@pytest.fixture(scope="module")
def reference_onnx(reference_dir, tmp_path_factory):
    """The reference MobileFaceNet exported once, checked on the reference photos."""
    out = tmp_path_factory.mktemp("onnx") / "mobilefacenet.onnx"
    r = _ok(_run("export", "--weights", reference_dir / "arcface_mobilefacenet.pth", "--out", out,
                 "--check-images", reference_dir / "faces", "--json"))
    return out, json.loads(r.stdout)


def test_export_writes_the_deployable_graph(reference_onnx, reference_dir):
    out, info = reference_onnx
    assert info["dtype"] == "fp32" and info["opset"] == 17 and info["bound"] == 1e-4
    assert info["exporter"] in ("dynamo", "torchscript")
    assert 0 <= info["max_abs_diff"] <= 1e-4
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert inp.name == "input" and outp.name == "embedding"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 112, 112]  # dynamic batch
    assert [d.dim_value for d in outp.type.tensor_type.shape.dim][1:] == [128]
    meta = {p.key: p.value for p in model.metadata_props}
    import hashlib

    from arcbench import __version__

    sha = hashlib.sha256((reference_dir / "arcface_mobilefacenet.pth").read_bytes()).hexdigest()
    assert meta["backbone"] == "mobilefacenet" and meta["input_size"] == "112" and meta["embedding_size"] == "128"
    assert meta["weights_sha256"] == sha and meta["arcbench_version"] == __version__
    assert meta["normalization"] == "(x/255-0.5)/0.5" and "bicubic" in meta["preprocessing"]
    assert meta["color"] == "RGB" and meta["dtype"] == "fp32"
    # the batch really is dynamic: 1 and 5 images through ONNX Runtime
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        assert sess.run(None, {"input": np.zeros((n, 3, 112, 112), np.float32)})[0].shape == (n, 128)


def test_reference_distances_under_onnxruntime_equal_torch(reference_onnx, reference_dir):
    """The real checkpoint exported: ONNX Runtime on the CPU gives torch's distances to 5 decimals."""
    out, _ = reference_onnx
    faces = reference_dir / "faces"
    for a, b in PAIRS:
        runs = {}
        for weights in (reference_dir / "arcface_mobilefacenet.pth", out):
            r = _ok(_run("verify", faces / a, faces / b, "--weights", weights, "--json"))
            runs[Path(weights).suffix] = json.loads(r.stdout)
        assert runs[".pth"]["engine"] == "torch" and runs[".onnx"]["engine"] == "onnxruntime"
        np.testing.assert_almost_equal(runs[".onnx"]["distance"], runs[".pth"]["distance"], decimal=5)
        assert runs[".onnx"]["same"] == runs[".pth"]["same"]


def test_text_output_names_the_engine(reference_onnx, reference_dir):
    out, _ = reference_onnx
    faces = reference_dir / "faces"
    r = _ok(_run("verify", faces / "1_001.jpg", faces / "1_002.jpg", "--weights", out))
    assert "(engine onnxruntime)" in r.stdout and "same person" in r.stdout


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    from arcbench.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, identities=2, images_per_identity=2, verify_identities=40, verify_images=3, pairs=10, workers=0)
    return root


def test_eval_protocol_identical_with_both_engines(reference_onnx, reference_dir, synth_set):
    out, _ = reference_onnx
    args = ["eval", "--val-data", synth_set / "verify", "--val-pairs", synth_set / "pairs.txt", "--device", "cpu",
            "--eval-batch-size", "32", "--json"]
    torch_run = json.loads(_ok(_run(*args, "--weights", reference_dir / "arcface_mobilefacenet.pth")).stdout)
    ort_run = json.loads(_ok(_run(*args, "--weights", out)).stdout)
    assert torch_run["engine"] == "torch" and ort_run["engine"] == "onnxruntime"
    for key in ("accuracy", "accuracy_std", "best_thresholds", "val", "far", "pairs_used", "num_images"):
        assert ort_run[key] == torch_run[key], key
    assert 0.5 < torch_run["accuracy"] < 1.0  # real weights on generated faces: above chance, not perfect


def test_engine_onnxruntime_with_torch_weights_exports_on_the_fly(reference_dir):
    faces = reference_dir / "faces"
    w = reference_dir / "arcface_mobilefacenet.pth"
    base = json.loads(_ok(_run("verify", faces / "1_001.jpg", faces / "2_001.jpg", "--weights", w, "--json")).stdout)
    r = json.loads(_ok(_run("verify", faces / "1_001.jpg", faces / "2_001.jpg", "--weights", w,
                            "--engine", "onnxruntime", "--json")).stdout)
    assert r["engine"] == "onnxruntime"
    np.testing.assert_almost_equal(r["distance"], base["distance"], decimal=5)


# --- bad input: one line naming the file -------------------------------------------------------------

def _verify(reference_dir, weights, *extra):
    faces = reference_dir / "faces"
    return _run("verify", faces / "1_001.jpg", faces / "1_002.jpg", "--weights", weights, *extra)


def test_truncated_onnx_is_one_line(reference_onnx, reference_dir, tmp_path):
    out, _ = reference_onnx
    cut = tmp_path / "cut.onnx"
    data = out.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _one_line_error(_verify(reference_dir, cut), cut, "cannot load ONNX model")


def test_garbage_onnx_is_one_line(reference_dir, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(4096))
    _one_line_error(_verify(reference_dir, junk), junk, "cannot load ONNX model")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    _one_line_error(_verify(reference_dir, empty), empty)


def test_onnx_of_another_input_size_is_one_line(reference_dir, tmp_path):
    from arcbench.inference.onnx_export import export_module

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / "small.onnx"
    export_module(model, path, input_size=96, fold_bn=False)  # no arcbench metadata: the graph's shape decides
    _one_line_error(_verify(reference_dir, path, "--backbone", "mobilefacenet"), path, "96x96", "112")


def test_onnx_made_for_another_backbone_is_one_line(reference_onnx, reference_dir):
    out, _ = reference_onnx
    _one_line_error(_verify(reference_dir, out, "--backbone", "iresnet50"), out, "mobilefacenet", "iresnet50")


def test_onnx_file_with_torch_engine_is_one_line(reference_onnx, reference_dir):
    out, _ = reference_onnx
    _one_line_error(_verify(reference_dir, out, "--engine", "torch"), out, "onnxruntime")


def test_missing_extra_is_one_line(reference_dir, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    w = reference_dir / "arcface_mobilefacenet.pth"
    line = _one_line_error(_run("export", "--weights", w, "--out", tmp_path / "m.onnx"), "pip install 'arcbench[onnx]'")
    assert "onnxruntime" in line
    _one_line_error(_verify(reference_dir, w, "--engine", "onnxruntime"), "pip install 'arcbench[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


def test_device_without_provider_is_one_line_never_cpu(reference_dir):
    """A device whose provider this onnxruntime lacks (CUDA on a CPU-only build) is refused."""
    from arcbench.inference.engines import providers_for
    from arcbench.errors import ArcbenchError
    from arcbench.plugins.devices.cuda import CUDADevice

    from arcbench.device import Device

    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # this CI's CPU-only build
    with pytest.raises(ArcbenchError, match="CUDAExecutionProvider") as err:
        providers_for(CUDADevice())
    assert "\n" not in str(err.value)

    class NoOnnx(Device):
        name = "noonnx"

    with pytest.raises(ArcbenchError, match="names no ONNX Runtime execution provider"):
        providers_for(NoOnnx())


def test_untraceable_third_party_backbone_names_the_operator(tmp_path, monkeypatch):
    from untraceable_plugin import SvdNet

    w = tmp_path / "svd.pth"
    torch.save(SvdNet().state_dict(), w)
    out = tmp_path / "svd.onnx"
    try:
        r = _run("--plugin", "untraceable_plugin", "export", "--backbone", "svdnet", "--weights", w, "--out", out)
        line = _one_line_error(r, "svdnet", "svd", "--debug")
        assert "operator" in line
        assert not out.exists() and not list(tmp_path.glob(".*tmp"))
    finally:
        from arcbench import plugin_manager

        plugin_manager.unregister_plugin("untraceable_plugin")


def test_check_refuses_a_file_beyond_the_bound(reference_dir, tmp_path, monkeypatch):
    """A graph whose embeddings drift from torch's is not kept, and the figure is given."""
    from arcbench.inference import onnx_export

    monkeypatch.setattr(onnx_export, "FP32_BOUND", 1e-12)  # any real float rounding is beyond it
    out = tmp_path / "m.onnx"
    line = _one_line_error(_run("export", "--weights", reference_dir / "arcface_mobilefacenet.pth", "--out", out,
                                "--check-images", reference_dir / "faces"), out, "not kept", "differ")
    assert "e-" in line and not out.exists()


def test_fp16_export_passes_its_bound(reference_dir, tmp_path):
    out = tmp_path / "m16.onnx"
    r = json.loads(_ok(_run("export", "--weights", reference_dir / "arcface_mobilefacenet.pth", "--out", out,
                            "--dtype", "fp16", "--check-images", reference_dir / "faces", "--json")).stdout)
    assert r["dtype"] == "fp16" and r["bound"] == 1e-2
    assert 1e-6 < r["max_abs_diff"] <= 1e-2  # half precision really differs, within the stated bound
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["dtype"] == "fp16"
    faces = reference_dir / "faces"
    d16 = json.loads(_ok(_run("verify", faces / "1_001.jpg", faces / "1_002.jpg", "--weights", out, "--json")).stdout)
    assert d16["engine"] == "onnxruntime" and d16["same"] is True


# --- every built-in backbone exports and passes --check --------------------------------------------------

def _calibrated_weights(name: str, path: Path, faces: Path) -> None:
    """The backbone's initialisation with BatchNorm statistics set from faces (as training would leave them):
    freshly initialised running statistics let a deep IResNet's residual stream overflow.  16 generated faces
    besides the photos: with 3 images alone, channels of near-zero variance amplify float rounding
    (mobilenetv1: 7e-5 instead of 2e-5)."""
    from arcbench.inference.onnx_export import check_images
    from arcbench.registry import create_backbone, get_backbone

    torch.manual_seed(0)
    model = create_backbone(name)
    size = get_backbone(name).input_size
    x = torch.cat([check_images(size, [str(faces)])[0], check_images(size, (), 16)[0]])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(x)
    torch.save(model.state_dict(), path)


#: export + check, measured on 2 shared cores: 9-33 s each up to iresnet50, iresnet100 26-49 s, iresnet200 45-71 s
BUILT_IN = ["mobilefacenet", "mobilenetv1", "iresnet18", "iresnet34",
            "iresnet50", pytest.param("iresnet100", marks=pytest.mark.slow),
            pytest.param("iresnet200", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_backbone_exports_and_passes_check(name, reference_dir, tmp_path):
    w, out = tmp_path / f"{name}.pth", tmp_path / f"{name}.onnx"
    _calibrated_weights(name, w, reference_dir / "faces")
    r = json.loads(_ok(_run("export", "--backbone", name, "--weights", w, "--out", out, "--check-batch", "2",
                            "--check-images", reference_dir / "faces", "--json")).stdout)
    assert r["max_abs_diff"] <= 1e-4 and r["bound"] == 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert meta["backbone"] == name


def test_weights_that_overflow_are_refused_with_the_reason(reference_dir, tmp_path):
    w, out = tmp_path / "nan.pth", tmp_path / "nan.onnx"
    from arcbench.registry import create_backbone

    state = create_backbone("mobilefacenet").state_dict()
    state["conv1.conv.weight"] = torch.full_like(state["conv1.conv.weight"], float("nan"))
    torch.save(state, w)
    _one_line_error(_run("export", "--weights", w, "--out", out, "--check-images", reference_dir / "faces"),
                    "not finite")
    assert not out.exists()



def test_torchscript_exporter_gives_the_same_graph_contract(reference_dir, tmp_path):
    """The exporter used where torch has no dynamo-based one: same names, dynamic batch, metadata, check."""
    out = tmp_path / "ts.onnx"
    r = json.loads(_ok(_run("export", "--weights", reference_dir / "arcface_mobilefacenet.pth", "--out", out,
                            "--exporter", "torchscript", "--check-images", reference_dir / "faces",
                            "--json")).stdout)
    assert r["exporter"] == "torchscript" and r["opset"] == 17 and r["max_abs_diff"] <= 1e-4
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"] and sess.get_outputs()[0].name == "embedding"
    assert sess.run(None, {"input": np.zeros((3, 3, 112, 112), np.float32)})[0].shape == (3, 128)
    assert sess.get_modelmeta().custom_metadata_map["backbone"] == "mobilefacenet"


def test_recorded_eval_run_of_an_onnx_file_says_onnxruntime(reference_onnx, synth_set, tmp_path):
    """`run --do_eval` with an .onnx file goes through the same engine choice and records it."""
    out, _ = reference_onnx
    runs = tmp_path / "runs"
    _ok(_run("run", "--do_eval", "True", "--model_path", out, "--val_data_path", synth_set / "verify",
             "--val_pairs_path", synth_set / "pairs.txt", "--device", "cpu", "--out", runs))
    (summary,) = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert summary["status"] == "completed" and summary["engine"] == "onnxruntime"
    assert 0.5 < summary["lfw_accuracy"] <= 1.0
