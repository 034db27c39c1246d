"""Device plugins: the cpu contract, ``--device auto``, CUDA peak FLOPs, SDAA without its SDK.

The SDAA wiring against a strict stand-in SDK is in ``test_sdaa_standin.py``;
CUDA-only tests skip without a GPU.
"""
from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
from click.testing import CliRunner

from arcbench import hookimpl, plugin_manager, registry
from arcbench.cli import main
from arcbench.errors import ArcbenchError
from arcbench.plugins.devices.cuda import CUDADevice, peak_flops_for
from arcbench.plugins.devices.sdaa import SDAADevice

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------ cpu

def test_cpu_autocast_runs_a_matmul_in_bfloat16():
    cpu = registry.get_device("cpu")
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with cpu.autocast(True):
        low = a @ b
    with cpu.autocast(False):
        full = a @ b
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    torch.testing.assert_close(low.float(), a @ b, rtol=2e-2, atol=5e-2)


def test_cpu_grad_scaler_is_disabled_and_transparent():
    cpu = registry.get_device("cpu")
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = cpu.grad_scaler(True)
    assert scaler.is_enabled() is False
    loss = model(torch.ones(2, 4)).sum()
    assert scaler.scale(loss) is loss
    before = model.weight.detach().clone()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(model.weight.detach(), before - 0.1 * model.weight.grad)


def test_cpu_contract():
    cpu = registry.get_device("cpu")
    assert cpu.is_available() == (True, "")
    cpu.bind(3)  # host processes share the CPU: binding places nothing elsewhere
    assert (cpu.dist_backend, cpu.amp_dtype, cpu.torch_device()) == ("gloo", torch.bfloat16, torch.device("cpu"))
    assert cpu.collective_device() == torch.device("cpu") and cpu.ddp_device_ids() is None
    assert cpu.compile_backend == "inductor" and cpu.rng_state() is None
    cpu.synchronize()
    assert cpu.memory_stats() == {"peak_memory": None, "allocated": None}
    assert cpu.peak_flops(torch.float32) is None
    cpu.seed(7)
    a = torch.rand(3)
    cpu.seed(7)
    assert torch.equal(a, torch.rand(3))
    info = cpu.describe()
    assert {"device", "available", "reason", "device_name", "dist_backend", "amp_dtype", "torch",
            "threads", "cores"} <= set(info)
    assert info["device"] == "cpu" and info["available"] is True and info["amp_dtype"] == "bfloat16"
    assert info["torch"] == torch.__version__ and info["threads"] >= 1 and isinstance(info["device_name"], str)


def test_devices_json_rows():
    result = CliRunner().invoke(main, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"cpu", "cuda", "sdaa"} <= set(rows)
    for row in rows.values():
        assert {"name", "available", "reason", "dist_backend", "amp_dtype", "device_name"} <= set(row)
    assert rows["cpu"]["available"] is True and rows["cpu"]["reason"] == ""
    assert (rows["cuda"]["dist_backend"], rows["sdaa"]["dist_backend"]) == ("nccl", "tccl")
    assert rows["cuda"]["available"] is torch.cuda.is_available()


# ------------------------------------------------------------------ sdaa without the SDK

def test_sdaa_without_the_sdk_is_unavailable_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_sdaa", None)  # makes ``import torch_sdaa`` fail
    sdaa = SDAADevice()
    assert sdaa.is_available() == (False, "unavailable: torch_sdaa is not installed")
    info = sdaa.info()
    assert info["reason"] == "unavailable: torch_sdaa is not installed" and info["device_name"] is None
    assert sdaa.describe()["available"] is False
    assert sdaa.peak_flops(torch.float16) is None


def test_sdaa_without_the_sdk_through_registry_and_cli(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_sdaa", None)
    with pytest.raises(ArcbenchError) as info:
        registry.require_device("sdaa")
    assert str(info.value) == "device 'sdaa' is unavailable: torch_sdaa is not installed"
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["devices", "--json"]).stdout)}
    assert rows["sdaa"]["available"] is False
    assert rows["sdaa"]["reason"] == "unavailable: torch_sdaa is not installed"


# ------------------------------------------------------------------ --device auto

@pytest.mark.parametrize("up, expected", [
    ({"sdaa", "cuda", "cpu"}, "sdaa"),
    ({"cuda", "cpu"}, "cuda"),
    ({"sdaa", "cpu"}, "sdaa"),
    ({"cpu"}, "cpu"),
])
def test_auto_prefers_sdaa_then_cuda_then_cpu(monkeypatch, up, expected):
    found = registry.devices()
    for name in ("sdaa", "cuda", "cpu"):
        state = (True, "") if name in up else (False, "unavailable: switched off by the test")
        monkeypatch.setattr(found[name], "is_available", lambda state=state: state)
    assert registry.get_device("auto").name == expected


def test_auto_with_nothing_available(monkeypatch):
    for dev in registry.devices().values():
        monkeypatch.setattr(dev, "is_available", lambda: (False, "unavailable: test"))
    with pytest.raises(ArcbenchError, match="no device is available") as info:
        registry.get_device("auto")
    assert "(tried sdaa, cuda, cpu" in str(info.value)  # in the order auto tries them


class _Ranked:
    """A third-party plugin with one always-available device of the given auto_priority."""

    def __init__(self, name, priority=None):
        from arcbench.device import Device

        attrs = {"name": name} if priority is None else {"name": name, "auto_priority": priority}
        self.device = type("Ranked", (Device,), attrs)()

    @hookimpl
    def register_devices(self, register):
        register(self.device)


@pytest.fixture()
def plugin():
    """Register plugin objects for one test, then take them out again."""
    names = []

    def add(obj, name):
        plugin_manager.register_plugin(obj, name)
        names.append(name)

    yield add
    for name in names:
        plugin_manager.unregister_plugin(name)


def test_a_third_party_device_with_a_higher_auto_priority_wins_auto(monkeypatch, plugin):
    plugin(_Ranked("npu", 40), "npu-plugin")
    assert registry.get_device("auto").name == "npu"
    assert registry.names("device")[0] == "npu"
    monkeypatch.setattr(registry.get_device("npu"), "is_available", lambda: (False, "unavailable: test"))
    assert registry.get_device("auto").name != "npu"  # only an available device is picked


def test_a_third_party_device_with_the_default_priority_does_not_beat_the_cpu(monkeypatch, plugin):
    plugin(_Ranked("slowcard"), "slow-plugin")
    assert registry.get_device("slowcard").auto_priority == 0
    for name in ("sdaa", "cuda"):
        monkeypatch.setattr(registry.get_device(name), "is_available", lambda: (False, "unavailable: test"))
    assert registry.get_device("auto").name == "cpu"
    assert registry.names("device")[-1] == "slowcard"


def test_equal_priorities_keep_registration_order(plugin):
    plugin(_Ranked("first", 50), "first-plugin")
    plugin(_Ranked("second", 50), "second-plugin")
    assert registry.get_device("auto").name == "first"


# ------------------------------------------------------------------ cuda

def test_cuda_peak_flops_table():
    assert peak_flops_for("NVIDIA H200", torch.bfloat16) == 989.5e12
    assert peak_flops_for("NVIDIA H100 80GB HBM3", torch.float16) == 989.5e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB", torch.float32) == 19.5e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB", torch.float32, tf32=True) == 156e12
    assert peak_flops_for("NVIDIA A10", torch.float16) == 125e12  # not mistaken for A100, nor vice versa
    assert peak_flops_for("Tesla V100-SXM2-32GB", torch.float16) == 125e12
    assert peak_flops_for("Tesla V100-SXM2-32GB", torch.bfloat16) is None  # no bf16 units before Ampere
    assert peak_flops_for("Tesla V100-SXM2-32GB", torch.float32, tf32=True) == 15.7e12
    assert peak_flops_for("Some Future GPU", torch.float32) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_cuda_without_a_gpu():
    cuda = CUDADevice()
    ok, reason = cuda.is_available()
    assert ok is False and reason.startswith("unavailable: ")
    assert cuda.peak_flops(torch.float16) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA is missing and disables the scaler
        assert cuda.grad_scaler(True).is_enabled() is False


@needs_cuda
def test_cuda_contract_on_a_gpu():
    cuda = registry.get_device("cuda")
    assert cuda.is_available() == (True, "")
    cuda.bind(0)
    a = torch.randn(64, 64, device=cuda.torch_device())
    with cuda.autocast(True):
        low = a @ a
    assert low.dtype == torch.float16
    cuda.synchronize()
    stats = cuda.memory_stats()
    assert stats["peak_memory"] >= stats["allocated"] > 0
    assert cuda.grad_scaler(True).is_enabled() is True
    assert cuda.grad_scaler(True, dtype=torch.bfloat16).is_enabled() is False
    info = cuda.describe()
    assert info["device_count"] >= 1 and "capability" in info and info["device_name"]
    if peak_flops_for(info["device_name"], torch.float16):
        assert cuda.peak_flops(torch.float16) == peak_flops_for(info["device_name"], torch.float16)
