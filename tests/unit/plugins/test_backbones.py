"""Backbone plugins: shapes, checkpoint layouts, the reference weights on real photos."""
from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from arcbench import registry
from arcbench.inference.weights import load_backbone
from arcbench.cli import main
from arcbench.verification.evaluate import embed_batch
from arcbench.errors import ArcbenchError
from arcbench.data.preprocess import load_tensor

EMBEDDING = {"mobilefacenet": 128, "mobilenetv1": 512, "iresnet18": 512, "iresnet34": 512,
             "iresnet50": 512, "iresnet100": 512, "iresnet200": 512}
#: Small enough to run for real on a 2-core CI box; the rest are checked on the meta device.
RUN_FOR_REAL = {"mobilefacenet", "mobilenetv1", "iresnet18"}


def _meta(name, **kwargs):
    """Build on the meta device: shapes and parameter counts without allocating or computing."""
    with torch.device("meta"):
        return registry.create_backbone(name, **kwargs)


@pytest.fixture(scope="module")
def ref_model(reference_dir):
    return load_backbone("mobilefacenet", reference_dir / "arcface_mobilefacenet.pth").eval()


# ------------------------------------------------------------------ shapes

@pytest.mark.parametrize("name", sorted(EMBEDDING))
def test_every_backbone_maps_a_batch_to_embeddings(name):
    spec = registry.get_backbone(name)
    assert spec.embedding_size == EMBEDDING[name]
    assert spec.margin_scale == (32.0 if name == "mobilefacenet" else 64.0)
    if name in RUN_FOR_REAL:
        torch.manual_seed(0)
        # train mode: untrained running statistics would saturate ReLU6 in eval mode
        model = registry.create_backbone(name).train()
        with torch.no_grad():
            out = model(torch.randn(2, 3, 112, 112))
        assert torch.isfinite(out).all()
        assert not torch.allclose(out[0], out[1])  # the input reaches the output
    else:
        model = _meta(name).eval()
        out = model(torch.zeros(2, 3, 112, 112, device="meta"))
    assert tuple(out.shape) == (2, EMBEDDING[name])


def test_registry_lists_all_builtin_backbones():
    assert set(EMBEDDING) <= set(registry.backbones())


def test_factories_take_embedding_size_and_dropout_and_reject_unknown_kwargs():
    assert _meta("iresnet34", embedding_size=256, dropout=0.2).fc.out_features == 256
    assert _meta("iresnet34", dropout=0.2).dropout.p == 0.2
    assert _meta("mobilenetv1", embedding_size=128).features.num_features == 128
    assert _meta("mobilefacenet", embedding_size=64, dropout=0.1).last_bn.num_features == 64
    for name in ("mobilefacenet", "mobilenetv1", "iresnet18"):
        with pytest.raises(TypeError, match="bogus"):
            registry.create_backbone(name, bogus=1)


def test_channels_last_and_bf16_autocast_keep_the_embedding(ref_model):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        ref = ref_model(x)
        cl_model = load_backbone("mobilefacenet").eval()
        cl_model.load_state_dict(ref_model.state_dict())
        cl_model = cl_model.to(memory_format=torch.channels_last)
        xcl = x.contiguous(memory_format=torch.channels_last)
        cl = cl_model(xcl)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = cl_model(xcl)
    assert cl.shape == (2, 128)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
    assert amp.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(amp.float(), ref)
    assert (cos > 0.99).all(), cos


def test_iresnet18_trains_a_step_under_autocast_in_channels_last():
    torch.manual_seed(0)
    model = registry.create_backbone("iresnet18").to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().pow(2).mean().backward()
    assert out.shape == (2, 512)
    assert model.conv1.weight.grad is not None and torch.isfinite(model.conv1.weight.grad).all()
    assert model.features.weight.grad is None  # arcface_torch freezes the embedding BN's scale


# ------------------------------------------------------------------ iresnet layout

def _expected_iresnet_keys(layers):
    """arcface_torch's key list, written out from its naming rules."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight", *[f"bn1.{s}" for s in bn], "prelu.weight"]
    for i, blocks in enumerate(layers, start=1):
        for b in range(blocks):
            p = f"layer{i}.{b}."
            keys += [p + "bn1." + s for s in bn] + [p + "conv1.weight"] + [p + "bn2." + s for s in bn]
            keys += [p + "prelu.weight", p + "conv2.weight"] + [p + "bn3." + s for s in bn]
            if b == 0:
                keys += [p + "downsample.0.weight"] + [p + "downsample.1." + s for s in bn]
    keys += [f"bn2.{s}" for s in bn] + ["fc.weight", "fc.bias"] + [f"features.{s}" for s in bn]
    return keys


def test_iresnet_keys_and_shapes_follow_arcface_torch():
    model = _meta("iresnet50")
    sd = model.state_dict()
    assert sorted(sd) == sorted(_expected_iresnet_keys((3, 4, 14, 3)))
    assert tuple(sd["conv1.weight"].shape) == (64, 3, 3, 3)
    assert model.conv1.stride == (1, 1)
    assert tuple(sd["layer1.0.downsample.0.weight"].shape) == (64, 64, 1, 1)
    assert model.layer1[0].downsample[0].stride == (2, 2)
    assert tuple(sd["layer4.0.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(sd["fc.weight"].shape) == (512, 25088)
    assert tuple(sd["features.weight"].shape) == (512,)
    assert isinstance(model.features, torch.nn.BatchNorm1d)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-05 for m in norms)
    assert all(c.bias is None for c in model.modules() if isinstance(c, torch.nn.Conv2d))


@pytest.mark.parametrize("name, millions", [("iresnet18", 24.0), ("iresnet50", 43.6), ("iresnet100", 65.2)])
def test_iresnet_parameter_counts_match_published(name, millions):
    params = sum(p.numel() for p in _meta(name).parameters())
    assert abs(params / 1e6 - millions) < 0.1, params


def test_iresnet_depths():
    for name, layers in {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3),
                         "iresnet100": (3, 13, 30, 3), "iresnet200": (6, 26, 60, 6)}.items():
        model = _meta(name)
        assert tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5)) == layers, name


# ------------------------------------------------------------------ reference weights

def test_mobilefacenet_state_dict_matches_reference_key_for_key(reference_dir):
    ref = torch.load(reference_dir / "arcface_mobilefacenet.pth", map_location="cpu", weights_only=True)
    ref = {k[len("arcface."):]: tuple(v.shape) for k, v in ref.items()}
    own = {k: tuple(v.shape) for k, v in registry.create_backbone("mobilefacenet").state_dict().items()}
    assert own == ref
    assert len(own) == 333


def test_reference_weights_separate_real_faces(reference_dir, ref_model):
    faces = reference_dir / "faces"
    batch = torch.stack([load_tensor(faces / f) for f in ("1_001.jpg", "1_002.jpg", "2_001.jpg")])
    emb = embed_batch(ref_model, batch)
    assert emb.shape == (3, 128)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    same = float(torch.dist(emb[0], emb[1]))
    diff = min(float(torch.dist(emb[0], emb[2])), float(torch.dist(emb[1], emb[2])))
    assert same < 0.9, same
    assert diff > 1.2, diff
    assert diff - same > 0.4


# ------------------------------------------------------------------ checkpoint layouts

@pytest.fixture()
def small_state():
    torch.manual_seed(3)
    model = registry.create_backbone("mobilefacenet")
    with torch.no_grad():  # make the BN statistics distinguishable from a fresh model's
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    return model.state_dict()


def _assert_loaded(model, state):
    got = model.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize("layout", ["bare", "module.", "backbone.", "arcface.", "module.backbone.",
                                    "nested", "nested+module.", "reference+head"])
def test_loader_accepts_prefixed_and_nested_checkpoints(tmp_path, small_state, layout):
    if layout == "bare":
        obj = small_state
    elif layout.startswith("nested"):
        prefix = layout.partition("+")[2]
        obj = {"backbone": {prefix + k: v for k, v in small_state.items()},
               "head": {"weight": torch.zeros(10, 128)}, "epoch": 3}
    elif layout == "reference+head":  # what the reference project saves while training
        obj = {**{"arcface." + k: v for k, v in small_state.items()}, "head.weight": torch.zeros(10, 128)}
    else:
        obj = {layout + k: v for k, v in small_state.items()}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    _assert_loaded(load_backbone("mobilefacenet", path), small_state)


def test_loader_tolerates_missing_num_batches_tracked(tmp_path, small_state):
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in small_state.items() if not k.endswith("num_batches_tracked")}, path)
    model = load_backbone("mobilefacenet", path)
    torch.testing.assert_close(model.conv1.bn.running_mean, small_state["conv1.bn.running_mean"])


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path, small_state):
    state = dict(small_state)
    del state["last_bn.bias"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ArcbenchError) as info:
        load_backbone("mobilefacenet", path)
    msg = str(info.value)
    assert "missing keys: last_bn.bias" in msg
    assert "unexpected keys: extra.weight" in msg
    assert str(path) in msg and "\n" not in msg


def test_mismatch_reports_shapes_and_wrong_architecture(tmp_path, small_state):
    path = tmp_path / "mfn.pth"
    torch.save(small_state, path)
    with pytest.raises(ArcbenchError, match=r"shape mismatch: features.weight \(128, 512, 1, 1\) vs \(64, 512, 1, 1\)"):
        load_backbone("mobilefacenet", path, embedding_size=64)
    with pytest.raises(ArcbenchError, match=r"missing keys: .*unexpected keys: ") as info:
        load_backbone("iresnet18", path)
    assert "more)" in str(info.value)  # long lists are abbreviated, not dumped


class _Payload:
    """Pickles to a call of os.system: a checkpoint that carries code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("wrap", ["bare", "in-dict"])
def test_loader_refuses_a_pickle_that_carries_code(tmp_path, wrap):
    marker = tmp_path / "code-ran"
    payload = _Payload(marker)
    path = tmp_path / "evil.pth"
    torch.save(payload if wrap == "bare" else {"backbone": {"conv1.conv.weight": payload}}, path)
    with pytest.raises(ArcbenchError, match="refusing to load") as info:
        load_backbone("mobilefacenet", path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(ArcbenchError, match="checkpoint not found"):
        load_backbone("mobilefacenet", tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ArcbenchError) as info:
        load_backbone("mobilefacenet", junk)
    assert str(junk) in str(info.value)
    tensors = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], tensors)
    with pytest.raises(ArcbenchError, match="not a state dict"):
        load_backbone("mobilefacenet", tensors)


# ------------------------------------------------------------------ CLI

def test_cli_backbones_json_reports_params_and_flops():
    result = CliRunner().invoke(main, ["backbones", "--json", "mobilefacenet", "iresnet18"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"mobilefacenet", "iresnet18"}
    mfn, r18 = rows["mobilefacenet"], rows["iresnet18"]
    assert mfn["embedding_size"] == 128 and r18["embedding_size"] == 512
    assert mfn["params"] == 1003136
    assert abs(r18["params"] / 1e6 - 24.0) < 0.1
    # flop_counter counts a multiply-add as 2: MobileFaceNet is ~0.22 GMACs.
    assert 0.2 <= mfn["gflops"] <= 0.5, mfn
    assert r18["gflops"] > 10 * mfn["gflops"]
    assert mfn["margin_scale"] == 32.0


def test_cli_backbones_unknown_name_is_a_one_line_error():
    result = CliRunner().invoke(main, ["backbones", "resnet9000"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "unknown backbone 'resnet9000'" in result.output and "mobilefacenet" in result.output


def test_builtin_specs_fold_batchnorm_and_take_112_pixels():
    for name in EMBEDDING:
        spec = registry.get_backbone(name)
        assert (spec.fold_bn, spec.input_size) == (True, 112), name


def test_checkpoint_formats_in_a_registration_is_ignored_with_a_deprecation_warning():
    from arcbench import hookimpl, plugin_manager

    class Old:
        @hookimpl
        def register_backbones(self, register):
            register("old-net", torch.nn.Identity, embedding_size=4, checkpoint_formats=("arcbench",))

    plugin_manager.register_plugin(Old(), "old-plugin")
    try:
        with pytest.warns(DeprecationWarning, match="checkpoint_formats is no longer used"):
            spec = registry.get_backbone("old-net")
        assert (spec.embedding_size, spec.fold_bn) == (4, False) and not hasattr(spec, "checkpoint_formats")
    finally:
        plugin_manager.unregister_plugin("old-plugin")
