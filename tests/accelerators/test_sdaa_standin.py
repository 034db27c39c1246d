"""The sdaa device plugin against a strict ``torch_sdaa`` stand-in (``tests/standins/sdk``).

No SDAA card is exercised here.  The stand-in has the SDK's names and
signatures as public model-zoo code uses them and records every call in
order, so these tests see exactly what arcbench asks of the SDK: binding,
``autocast()`` with no arguments, ``GradScaler()``, timing events where the
SDK has them (else a ``synchronize()`` before every timer read), RNG states in checkpoints, the compile backend.
Its compute stays on CPU tensors: the ``standin`` fixture points the sdaa
device's placements at the host.  Whether the real SDK behaves like the
stand-in is checked only on a machine with SDAA cards.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from arcbench import plugin_manager, registry
from arcbench.cli import main
from arcbench.errors import ArcbenchError
from arcbench.plugins.devices.sdaa import SDAADevice
from testutil import IMPORT_PATH, SDK

HERE = Path(__file__).resolve().parents[1]  # tests/


def _forget_sdk():
    for name in [n for n in sys.modules if n == "torch_sdaa" or n.startswith("torch_sdaa.")]:
        del sys.modules[name]


@pytest.fixture()
def standin(monkeypatch):
    """Import the stand-in SDK in ``mode``; returns its module (``.CALLS`` holds the calls)."""
    def load(mode="ok"):
        monkeypatch.setenv("TORCH_SDAA_STANDIN", mode)
        monkeypatch.syspath_prepend(str(SDK))
        monkeypatch.setattr(torch, "sdaa", None, raising=False)  # undone after the test
        monkeypatch.setattr(SDAADevice, "torch_type", "cpu")  # compute stays on host tensors
        monkeypatch.setattr(SDAADevice, "index", None)
        _forget_sdk()
        if mode == "broken":
            return None
        import torch_sdaa

        return torch_sdaa

    yield load
    _forget_sdk()
    registry.get_device("sdaa").index = None


def names(sdk):
    return [c[0] for c in sdk.CALLS]


def run_cli(args, mode="ok", extra_env=None):
    env = dict(os.environ, TORCH_SDAA_STANDIN=mode, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SDK), IMPORT_PATH, env.get("PYTHONPATH", "")])
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "arcbench", *args], env=env, capture_output=True, text=True,
                          timeout=120)


# ------------------------------------------------------------------ availability and `devices`

def test_devices_json_stays_valid_json_when_the_sdk_prints_a_banner():
    p = run_cli(["devices", "--json"], mode="banner")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}  # no banner mixed into stdout
    assert rows["sdaa"]["available"] is True and rows["sdaa"]["device_name"] == "T100 (stand-in)"
    assert "runtime banner" in p.stderr and "driver 2.0.0 loaded" in p.stderr


@pytest.mark.parametrize("mode, reason", [
    ("nocard", "unavailable: torch_sdaa found no SDAA card"),
    ("broken", "unavailable: torch_sdaa failed to import: OSError: libsdaart.so: cannot open shared object "
               "file: No such file or directory"),
])
def test_each_failure_mode_is_one_line(mode, reason):
    p = run_cli(["devices", "--json"], mode=mode)
    assert p.returncode == 0, p.stderr
    row = {r["name"]: r for r in json.loads(p.stdout)}["sdaa"]
    assert row["available"] is False and row["reason"] == reason
    p = run_cli(["run", "--device", "sdaa", "--train-data", "synthetic", "--max-steps", "1"], mode=mode)
    assert p.returncode == 2 and p.stderr.strip() == f"arcbench: error: device 'sdaa' is {reason}" \
        or p.stderr.strip().endswith(reason), p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_not_installed_reads_as_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_sdaa", None)
    assert SDAADevice().is_available() == (False, "unavailable: torch_sdaa is not installed")


# ------------------------------------------------------------------ binding and runtime calls

def test_bind_sets_the_card_once_and_placements_use_it(standin):
    sdk = standin()
    sdaa = SDAADevice()
    assert sdaa.is_available() == (True, "") and sdaa.dist_backend == "tccl"
    with pytest.raises(RuntimeError, match="not bound"):
        sdaa.torch_device()
    sdaa.bind(2)
    assert ("set_device", (2,), {}) in sdk.CALLS
    assert sdaa.torch_device() == torch.device("cpu", 2) and sdaa.ddp_device_ids() == [2]
    assert sdaa.collective_device() == torch.device("cpu", 2)  # tccl wants its buffers on the card
    with pytest.raises(ArcbenchError, match="5 processes but 4 sdaa cards"):
        sdaa.bind(4)
    sdk.CALLS.clear()
    sdaa.synchronize()
    sdaa.reset_peak_memory()
    assert sdaa.memory_stats() == {"peak_memory": 0, "allocated": 0}
    sdaa.seed(11)
    assert names(sdk) == ["synchronize", "reset_peak_memory_stats", "max_memory_allocated", "memory_allocated",
                          "manual_seed_all"]
    assert sdk.CALLS[-1][1] == (11,)
    info = sdaa.describe()
    assert info["torch_sdaa"] == "1.3.0-standin" and info["device_count"] == 4 and info["bound_index"] == 2


def test_amp_is_the_sdk_autocast_called_with_no_arguments_and_its_grad_scaler(standin):
    sdk = standin()
    sdaa = SDAADevice()
    with sdaa.autocast(True):
        pass
    assert sdk.CALLS[-1] == ("autocast", (), {})
    n = len(sdk.CALLS)
    with sdaa.autocast(False):
        pass
    assert len(sdk.CALLS) == n  # AMP off never touches the SDK
    scaler = sdaa.grad_scaler(True)
    assert sdk.CALLS[-1] == ("GradScaler", (), {}) and scaler.is_enabled()
    assert sdaa.grad_scaler(True, dtype=torch.bfloat16).is_enabled() is False  # bf16 needs no scaling
    with sdaa.autocast(True, dtype=torch.bfloat16):
        pass
    assert sdk.CALLS[-1] == ("autocast", (), {"dtype": torch.bfloat16})


def test_an_autocast_without_dtype_still_runs_default_amp_and_refuses_bf16_in_one_line(standin):
    sdk = standin("nodtype")
    sdaa = SDAADevice()
    with sdaa.autocast(True):
        pass
    assert sdk.CALLS[-1] == ("autocast", (), {})
    with pytest.raises(ArcbenchError, match="autocast\\(\\) takes no dtype: AMP in bfloat16 is not supported"):
        sdaa.autocast(True, dtype=torch.bfloat16)


# ------------------------------------------------------------------ a short run through the plugin

def _train(tmp_path, *extra):
    return CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", "sdaa", "--backbone", "tiny",
                                     "--train-data", "synthetic", "--synthetic-classes", "10",
                                     "--synthetic-steps", "4", "--batch-size", "4", "--precision", "amp",
                                     "--log-interval", "2", "--quiet",
                                     "--out", str(tmp_path / "runs"), *extra])


@pytest.fixture()
def tiny():
    plugin_manager.load_plugin_module("tinyplugin")
    yield
    plugin_manager.unregister_plugin("tinyplugin")


def _count_timer_reads(sdk, monkeypatch):
    """Record each host-clock read of ``arcbench.device`` (the sync timer's marks) in the SDK's call list."""
    import arcbench.device as device_mod

    real = device_mod.time.perf_counter

    class Clock:
        @staticmethod
        def perf_counter():
            sdk.CALLS.append(("timer", (), {}))
            return real()

    monkeypatch.setattr(device_mod, "time", Clock)


def test_a_short_sdaa_run_uses_the_sdk_amp_times_with_events_and_keeps_rng(standin, tiny, tmp_path, monkeypatch):
    sdk = standin()
    _count_timer_reads(sdk, monkeypatch)
    result = _train(tmp_path, "--epochs", "2")
    assert result.exit_code == 0, result.output
    calls = names(sdk)
    assert calls.count("set_device") == 1 and ("set_device", (0,), {}) in sdk.CALLS
    # the plugin's AMP: fp16 autocast as the model zoo calls it, and its GradScaler driving each step
    assert calls.count("GradScaler") == 1 and ("autocast", (), {}) in sdk.CALLS
    steps = 2 * 4
    assert calls.count("GradScaler.step") == steps and calls.count("GradScaler.update") == steps
    # the SDK offers timing events: two marks a step plus one per timed window (an epoch), no host-clock
    # read, and one synchronize per window (its start) plus one event wait per flush (every 2 steps)
    assert ("Event", (), {"enable_timing": True}) in sdk.CALLS
    assert calls.count("Event.record") == 2 * steps + 2 and "timer" not in calls
    assert calls.count("synchronize") == 2 and calls.count("Event.synchronize") == steps // 2
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["peak_memory_kind"] == "device"
    # the SDAA RNG state is saved in checkpoints ...
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    saved = state["rng"]["device"]
    assert saved["name"] == "sdaa" and [s.tolist() for s in saved["states"]] == [[i, 0, 1, 1] for i in range(4)]
    # ... and restored on --resume
    sdk.CALLS.clear()
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--resume", str(run), "--epochs", "3",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    restored = [c for c in sdk.CALLS if c[0] == "set_rng_state_all"]
    assert restored and restored[0][1][0] == [[i, 0, 1, 1] for i in range(4)]
    assert json.loads((run / "summary.json").read_text())["step_timer"] == "events"


def test_an_sdk_without_events_times_each_mark_right_after_a_synchronize(standin, tiny, tmp_path, monkeypatch):
    sdk = standin("noevent")
    _count_timer_reads(sdk, monkeypatch)
    result = _train(tmp_path, "--epochs", "1")
    assert result.exit_code == 0, result.output
    calls = names(sdk)
    timers = [i for i, c in enumerate(calls) if c == "timer"]
    assert "Event.record" not in calls and len(timers) >= 2 * 4 + 1  # two marks a step, one per window
    assert all(calls[i - 1] == "synchronize" for i in timers), [calls[i - 1] for i in timers]
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "summary.json").read_text())["step_timer"] == "synchronize"


@pytest.mark.parametrize("device, backend", [("sdaa", "teco_inductor"), ("cpu", "inductor")])
def test_compile_asks_for_the_device_plugins_backend(standin, tiny, tmp_path, monkeypatch, device, backend):
    standin()
    asked = []

    def fake_compile(model, **kwargs):
        asked.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", device, "--backbone", "tiny",
                                       "--train-data", "synthetic", "--synthetic-classes", "10",
                                       "--synthetic-steps", "2", "--batch-size", "4", "--epochs", "1",
                                       "--compile", "--quiet", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert asked and asked[0].get("backend") == backend
