"""Device plugins: the cpu contract, ``--device auto``, CUDA peak FLOPs, and SDAA wiring.

No SDAA hardware is exercised here.  The SDAA tests check only that the
device routes every call (set_device, synchronize, memory, autocast,
GradScaler, seeding, description) to the ``torch_sdaa`` SDK, using a
stand-in ``torch_sdaa`` module and ``torch.sdaa`` namespace injected with
monkeypatch; whether the real SDK behaves as the stand-in does is only
checked on a machine with SDAA cards.  CUDA-only tests skip without a GPU.
"""
from __future__ import annotations

import contextlib
import json
import sys
import types
import warnings

import pytest
import torch
from click.testing import CliRunner

from arcbench import plugins
from arcbench.cli import main
from arcbench.errors import ArcbenchError
from arcbench.plugins.devices.cuda import CUDADevice, peak_flops_for
from arcbench.plugins.devices.sdaa import SDAADevice

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------ cpu

def test_cpu_autocast_runs_a_matmul_in_bfloat16():
    cpu = plugins.get_device("cpu")
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with cpu.autocast(True):
        low = a @ b
    with cpu.autocast(False):
        full = a @ b
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    torch.testing.assert_close(low.float(), a @ b, rtol=2e-2, atol=5e-2)


def test_cpu_grad_scaler_is_disabled_and_transparent():
    cpu = plugins.get_device("cpu")
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
    cpu = plugins.get_device("cpu")
    assert cpu.is_available() == (True, "")
    assert (cpu.dist_backend, cpu.amp_dtype, cpu.torch_device(3)) == ("gloo", torch.bfloat16, torch.device("cpu"))
    cpu.set_device(0)
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
        plugins.require_device("sdaa")
    assert str(info.value) == "device 'sdaa' is unavailable: torch_sdaa is not installed"
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["devices", "--json"]).stdout)}
    assert rows["sdaa"]["available"] is False
    assert rows["sdaa"]["reason"] == "unavailable: torch_sdaa is not installed"


# ------------------------------------------------------------------ sdaa wiring against a stand-in SDK

class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, name, result=None):
        def fn(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return result
        return fn


@pytest.fixture()
def fake_sdk(monkeypatch):
    """A stand-in ``torch_sdaa`` + ``torch.sdaa`` that records what the device asks of it."""
    rec = _Recorder()

    class GradScaler:
        def __init__(self, *args, **kwargs):
            rec.calls.append(("GradScaler", args, kwargs))

        def is_enabled(self):
            return True

    @contextlib.contextmanager
    def autocast(*args, **kwargs):
        rec.calls.append(("autocast", args, kwargs))
        yield

    mod = types.ModuleType("torch_sdaa")
    mod.__version__ = "1.3.0-standin"
    mod.amp = types.SimpleNamespace(autocast=autocast, GradScaler=GradScaler)
    ns = types.SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 4,
        set_device=rec("set_device"), synchronize=rec("synchronize"),
        max_memory_allocated=rec("max_memory_allocated", 2048), memory_allocated=rec("memory_allocated", 512),
        reset_peak_memory_stats=rec("reset_peak_memory_stats"),
        get_device_name=rec("get_device_name", "T100 stand-in"), manual_seed_all=rec("manual_seed_all"),
    )
    monkeypatch.setitem(sys.modules, "torch_sdaa", mod)
    monkeypatch.setattr(torch, "sdaa", ns, raising=False)
    monkeypatch.setenv("SDAA_VISIBLE_DEVICES", "2,3")
    return rec


def _names(rec):
    return [c[0] for c in rec.calls]


def test_sdaa_routes_runtime_calls_to_the_sdk(fake_sdk):
    sdaa = SDAADevice()
    assert sdaa.is_available() == (True, "")
    assert sdaa.dist_backend == "tccl" and sdaa.device_count() == 4
    sdaa.set_device(3)
    sdaa.synchronize()
    assert sdaa.memory_stats() == {"peak_memory": 2048, "allocated": 512}
    sdaa.reset_peak_memory()
    sdaa.seed(11)
    assert ("set_device", (3,), {}) in fake_sdk.calls
    assert _names(fake_sdk) == ["set_device", "synchronize", "max_memory_allocated", "memory_allocated",
                                "reset_peak_memory_stats", "manual_seed_all"]
    assert fake_sdk.calls[-1][1] == (11,)


def test_sdaa_amp_uses_the_sdk_autocast_and_grad_scaler(fake_sdk):
    sdaa = SDAADevice()
    with sdaa.autocast(True):
        pass
    assert fake_sdk.calls[-1] == ("autocast", (), {"enabled": True, "dtype": torch.float16})
    with sdaa.autocast(True, dtype=torch.bfloat16):
        pass
    assert fake_sdk.calls[-1][2]["dtype"] == torch.bfloat16
    n = len(fake_sdk.calls)
    with sdaa.autocast(False):
        pass
    assert len(fake_sdk.calls) == n  # AMP off never touches the SDK
    scaler = sdaa.grad_scaler(True)
    assert _names(fake_sdk)[-1] == "GradScaler" and scaler.is_enabled()
    assert sdaa.grad_scaler(True, dtype=torch.bfloat16).is_enabled() is False  # bf16 needs no scaling
    assert sdaa.grad_scaler(False).is_enabled() is False


def test_sdaa_describe_carries_sdk_version_and_visible_devices(fake_sdk):
    info = SDAADevice().describe()
    assert info["available"] is True and info["dist_backend"] == "tccl"
    assert info["torch_sdaa"] == "1.3.0-standin"
    assert info["visible_devices"] == "2,3"
    assert info["device_count"] == 4 and info["device_name"] == "T100 stand-in"
    assert ("get_device_name", (0,), {}) in fake_sdk.calls


def test_sdaa_is_picked_by_auto_when_the_sdk_reports_a_card(fake_sdk):
    plugins.reset()
    try:
        assert plugins.get_device("auto").name == "sdaa"
        assert plugins.require_device("sdaa").name == "sdaa"
    finally:
        plugins.reset()


# ------------------------------------------------------------------ --device auto

@pytest.mark.parametrize("up, expected", [
    ({"sdaa", "cuda", "cpu"}, "sdaa"),
    ({"cuda", "cpu"}, "cuda"),
    ({"sdaa", "cpu"}, "sdaa"),
    ({"cpu"}, "cpu"),
])
def test_auto_prefers_sdaa_then_cuda_then_cpu(monkeypatch, up, expected):
    registry = plugins.devices()
    for name in ("sdaa", "cuda", "cpu"):
        state = (True, "") if name in up else (False, "unavailable: switched off by the test")
        monkeypatch.setattr(registry[name], "is_available", lambda state=state: state)
    assert plugins.get_device("auto").name == expected


def test_auto_with_nothing_available(monkeypatch):
    for dev in plugins.devices().values():
        monkeypatch.setattr(dev, "is_available", lambda: (False, "unavailable: test"))
    with pytest.raises(ArcbenchError, match="no device is available"):
        plugins.get_device("auto")


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
    cuda = plugins.get_device("cuda")
    assert cuda.is_available() == (True, "")
    a = torch.randn(64, 64, device=cuda.torch_device(0))
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
