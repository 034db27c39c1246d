"""The plugin manager: built-ins, entry-point discovery, direct registration, unknown names."""
from __future__ import annotations

import json
import sys
import textwrap
import types

import pytest
import torch
from click.testing import CliRunner

from arcbench import __version__, hookimpl, plugin_manager, registry
from arcbench.cli import main
from arcbench.errors import ArcbenchError, UnknownNameError

DEMO_MODULE = "arcbench_demo_plugin"
DEMO_DIST = "arcbench-demo-plugin"

DEMO_SOURCE = '''
"""A third-party arcbench plugin, installed only for the test."""
import torch
from torch import nn

from arcbench import hookimpl
from arcbench.device import Device


class DemoDevice(Device):
    name = "demo"
    dist_backend = "gloo"
    torch_type = "cpu"

    def device_name(self, local_rank=0):
        return "Demo Accelerator"


class TinyNet(nn.Module):
    def __init__(self, embedding_size=16):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 8, stride=8)
        self.fc = nn.Linear(4 * 14 * 14, embedding_size)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@hookimpl
def register_devices(register):
    register(DemoDevice())


@hookimpl
def register_backbones(register):
    register("demo-net", TinyNet, embedding_size=16, margin_scale=30.0)
'''


@pytest.fixture()
def fresh(monkeypatch):
    """Plugin state rebuilt before and after the test, so nothing leaks into other tests."""
    monkeypatch.delenv("ARCBENCH_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)
    plugin_manager.reset()
    yield
    sys.modules.pop(DEMO_MODULE, None)
    plugin_manager.reset()


def _install(tmp_path, monkeypatch, source=DEMO_SOURCE, module=DEMO_MODULE, dist=DEMO_DIST, version="1.2.3"):
    """Write a module plus a ``*.dist-info`` with an ``arcbench`` entry point, and put it on sys.path."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[arcbench]\ndemo = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_manager.reset()


def _cli(*args):
    return CliRunner().invoke(main, list(args))


# ------------------------------------------------------------------ built-ins

def test_plugins_json_lists_builtins_with_hooks(fresh):
    result = _cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(plugin_manager.BUILTIN_PLUGINS) <= set(rows)
    hooks = {n: rows[n]["hooks"] for n in plugin_manager.BUILTIN_PLUGINS}
    assert hooks["arcbench.plugins.devices.sdaa"] == ["register_devices"]
    assert hooks["arcbench.plugins.backbones.iresnet"] == ["register_backbones"]
    assert hooks["arcbench.plugins.heads.margins"] == ["register_heads"]
    for name in plugin_manager.BUILTIN_PLUGINS:
        assert rows[name]["builtin"] is True and rows[name]["version"] == __version__


# ------------------------------------------------------------------ entry points

def test_entry_point_plugin_is_discovered_and_usable(fresh, tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch)
    rows = {r["name"]: r for r in plugin_manager.list_plugins()}
    demo = rows["demo"]
    assert demo == {"name": "demo", "hooks": ["register_backbones", "register_devices"], "version": "1.2.3",
                    "distribution": DEMO_DIST, "builtin": False}

    dev = registry.get_device("demo")
    assert dev.is_available() == (True, "") and dev.plugin == "demo"
    assert dev.info()["device_name"] == "Demo Accelerator"
    spec = registry.get_backbone("demo-net")
    assert (spec.embedding_size, spec.margin_scale, spec.plugin) == (16, 30.0, "demo")
    out = registry.create_backbone("demo-net")(torch.zeros(2, 3, 112, 112))
    assert out.shape == (2, 16)

    result = _cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    assert "demo" in {r["name"] for r in json.loads(result.stdout)}
    table = _cli("plugins").output
    assert "demo" in table and "1.2.3" in table
    devices = {r["name"]: r for r in json.loads(_cli("devices", "--json").stdout)}
    assert devices["demo"]["available"] is True and devices["demo"]["plugin"] == "demo"


@pytest.mark.parametrize("allow, loads", [("", False), ("demo", True), (DEMO_DIST, True), ("other", False),
                                           (" other , demo ", True),
                                           ("Arcbench_Demo.Plugin", True)])
def test_arcbench_load_plugins_filters_entry_points(fresh, tmp_path, monkeypatch, allow, loads):
    _install(tmp_path, monkeypatch)
    monkeypatch.setenv("ARCBENCH_LOAD_PLUGINS", allow)
    plugin_manager.reset()
    names = {r["name"] for r in plugin_manager.list_plugins()}
    assert ("demo" in names) is loads
    assert (DEMO_MODULE in sys.modules) is loads  # filtered plugins are not even imported
    assert set(plugin_manager.BUILTIN_PLUGINS) <= names
    assert "cpu" in registry.devices() and "mobilefacenet" in registry.backbones()
    assert ("demo" in registry.devices()) is loads


def test_broken_entry_point_is_a_clear_error(fresh, tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, source="raise RuntimeError('missing driver library')\n")
    with pytest.raises(ArcbenchError, match=r"plugin 'demo' \(arcbench_demo_plugin\) failed to import: "
                                            r"RuntimeError: missing driver library"):
        registry.devices()
    result = _cli("plugins")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "missing driver library" in result.output
    monkeypatch.setenv("ARCBENCH_LOAD_PLUGINS", "")
    plugin_manager.reset()
    assert "cpu" in registry.devices()  # the escape hatch works


# ------------------------------------------------------------------ direct registration

class ToyHead(torch.nn.Module):
    def __init__(self, in_features, num_classes, s=10.0):
        super().__init__()
        self.fc = torch.nn.Linear(in_features, num_classes, bias=False)
        self.s = s

    def forward(self, emb, labels):
        return self.fc(emb) * self.s


class ClassPlugin:
    """Hook implementations as methods; registering the class instantiates it."""

    __version__ = "0.0.7"

    @hookimpl
    def register_heads(self, register):
        register("toy", ToyHead, description="a plain linear classifier")

    @hookimpl
    def register_devices(self, register):
        from arcbench.plugins.devices.cpu import CPUDevice

        class Twin(CPUDevice):
            name = "cpu-twin"

        register(Twin())


def test_register_plugin_with_a_class(fresh):
    plugin_manager.register_plugin(ClassPlugin, "class-plugin")
    head = registry.create_head("toy", 8, 5, s=2.0)
    assert head(torch.ones(3, 8), torch.zeros(3, dtype=torch.long)).shape == (3, 5)
    assert registry.get_head("toy").description == "a plain linear classifier"
    assert registry.get_device("cpu-twin").plugin == "class-plugin"
    row = {r["name"]: r for r in plugin_manager.list_plugins()}["class-plugin"]
    assert row["hooks"] == ["register_devices", "register_heads"] and row["version"] == "0.0.7"
    with pytest.raises(ArcbenchError, match="already registered"):
        plugin_manager.register_plugin(ClassPlugin, "class-plugin")
    plugin_manager.unregister_plugin("class-plugin")
    with pytest.raises(UnknownNameError):
        registry.get_head("toy")


def test_register_plugin_with_a_module(fresh):
    mod = types.ModuleType("inline_plugin")

    @hookimpl
    def register_backbones(register):
        register("linear-net", lambda embedding_size=8, **kw: torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 112 * 112, embedding_size)), embedding_size=8)

    mod.register_backbones = register_backbones
    plugin_manager.register_plugin(mod, "inline")
    assert registry.create_backbone("linear-net")(torch.zeros(2, 3, 112, 112)).shape == (2, 8)
    result = _cli("backbones", "--json", "linear-net")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["params"] == 3 * 112 * 112 * 8 + 8 and row["plugin"] == "inline"


def test_a_bad_registration_names_the_plugin(fresh):
    class Sloppy:
        @hookimpl
        def register_backbones(self, register):
            register("sloppy", torch.nn.Identity, embedding_size=4, colour="red")

    plugin_manager.register_plugin(Sloppy(), "sloppy-plugin")
    with pytest.raises(ArcbenchError, match="plugin 'sloppy-plugin': bad register_backbones registration"):
        registry.backbones()


# ------------------------------------------------------------------ unknown names

@pytest.mark.parametrize("kind, getter, known", [
    ("device", registry.get_device, {"auto", "cpu", "cuda", "sdaa"}),
    ("backbone", registry.get_backbone, {"mobilefacenet", "iresnet50"}),
    ("head", registry.get_head, {"arcface", "cosface", "combined"}),
])
def test_unknown_names_list_the_known_ones(fresh, kind, getter, known):
    with pytest.raises(UnknownNameError) as info:
        getter("nonesuch")
    err = info.value
    assert (err.kind, err.name, err.exit_code) == (kind, "nonesuch", 2)
    assert known <= set(err.known) and err.known == sorted(err.known)
    assert str(err).startswith(f"unknown {kind} 'nonesuch'; known {kind}s: ")
    assert all(n in str(err) for n in known)


@pytest.mark.parametrize("args, fragment", [
    (["verify", "a.jpg", "b.jpg", "--weights", "w.pth", "--device", "tpu9"], "unknown device 'tpu9'"),
    (["verify", "a.jpg", "b.jpg", "--weights", "w.pth", "--backbone", "vit-huge"], "unknown backbone 'vit-huge'"),
    (["backbones", "vit-huge"], "unknown backbone 'vit-huge'"),
])
def test_unknown_names_through_the_cli(fresh, args, fragment):
    result = _cli(*args)
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("arcbench: error: ") and fragment in line and "known" in line


# ------------------------------------------------------------------ help texts from the registries

def test_help_lists_registered_names_including_a_plugin_loaded_with_dash_dash_plugin(fresh, monkeypatch):
    monkeypatch.delenv(plugin_manager.PLUGIN_MODULES_ENV, raising=False)
    try:
        out = _cli("--plugin", "tinyplugin", "run", "--help").output
    finally:
        plugin_manager.unregister_plugin("tinyplugin")
    flat = " ".join(out.split())
    assert "tiny_stall" in flat and "iresnet200" in flat  # --backbone: built-ins and the plugin's
    assert "the first available of sdaa, cuda, cpu" in flat  # --device: in auto's order
    assert "Margin head: arcface, cosface, combined, partial_fc" in flat
    bench = " ".join(_cli("bench", "--help").output.split())
    assert "Backbone plugin: mobilefacenet, mobilenetv1, iresnet18" in bench and "tiny" not in bench


def test_importing_the_cli_loads_no_plugin():
    import subprocess

    code = ("import sys, arcbench.cli, arcbench.plugin_manager as pm; "
            "print(pm._loaded, any(m.startswith('arcbench.plugins.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
