"""Precision and cuDNN settings on accelerators, proven on the CPU.

* ``--amp-dtype``: bf16 by default where the card has it (CUDA 8.0+, the CPU), fp16 with a
  GradScaler elsewhere (SDAA, as the model zoo); bf16 never gets a scaler; the summary says
  which dtype ran.
* The head's cosine matmul runs under autocast; margin and cross-entropy stay fp32.
* cuDNN autotuning is on by default on CUDA, recorded in ``system.json``'s device, and off
  with ``--deterministic``.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from arcbench.cli import main
from arcbench.plugins.devices.cuda import CUDADevice
from arcbench.plugins.heads.margins import ArcFace, CombinedMargin, CosFace

from test_sdaa_standin import standin  # noqa: F401  (the stand-in SDK fixture)


@pytest.mark.parametrize("head", [ArcFace, CosFace, CombinedMargin])
def test_the_heads_matmul_runs_in_bf16_and_the_loss_stays_close_to_the_fp32_head(head):
    torch.manual_seed(0)
    h = head(128, 2000, s=64.0)
    emb, labels = torch.randn(64, 128), torch.randint(0, 2000, (64,))
    fp32 = F.cross_entropy(h(emb, labels), labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = h(emb, labels)
        amp = F.cross_entropy(logits, labels)
    assert logits.dtype == torch.float32 and amp.dtype == torch.float32  # margin and loss in fp32
    assert amp.item() != fp32.item()  # the matmul did run in bf16 ...
    assert abs(amp.item() - fp32.item()) <= 1e-3 * fp32.item()  # ... and moved the loss by < 0.1 %
    # the gradient reaching the centres is fp32 and close too
    g32 = torch.autograd.grad(fp32, h.weight)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g16 = torch.autograd.grad(F.cross_entropy(h(emb, labels), labels), h.weight)[0]
    assert g16.dtype == torch.float32 and float((g16 - g32).norm() / g32.norm()) < 0.02


def _fake_gpu(monkeypatch, name="NVIDIA H100 PCIe", major=9):
    """torch.cuda answering as one card of ``name`` (compute capability ``major``.0)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (major, 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i=0: SimpleNamespace(total_memory=80 * 2**30, major=major, minor=0))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)


@pytest.mark.parametrize("major, dtype", [(9, "bf16"), (8, "bf16"), (7, "fp16")])
def test_cuda_defaults_to_bf16_from_compute_capability_8(monkeypatch, major, dtype):
    _fake_gpu(monkeypatch, major=major)
    cuda = CUDADevice()
    assert cuda.default_amp_dtype() == dtype
    assert cuda.grad_scaler(True, torch.bfloat16).is_enabled() is False  # bf16: no GradScaler, no sync


def test_sdaa_keeps_fp16_with_its_grad_scaler(standin):
    from arcbench.plugins.devices.sdaa import SDAADevice

    standin()
    sdaa = SDAADevice()
    assert sdaa.default_amp_dtype() == "fp16" and sdaa.grad_scaler(True, torch.float16).is_enabled()


def test_cudnn_benchmark_is_on_by_default_recorded_and_off_when_deterministic(monkeypatch):
    _fake_gpu(monkeypatch)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    cuda = CUDADevice()
    cuda.configure(deterministic=False)
    assert torch.backends.cudnn.benchmark is True and cuda.describe()["cudnn_benchmark"] is True
    try:
        cuda.configure(deterministic=True)
        assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
        assert torch.are_deterministic_algorithms_enabled() and cuda.describe()["cudnn_benchmark"] is False
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("given, recorded", [(None, "bfloat16"), ("fp16", "float16")])
def test_the_summary_says_which_amp_dtype_ran(tmp_path, tiny, given, recorded):
    args = ["--plugin", "tinyplugin", "run", "--device", "cpu", "--backbone", "tiny", "--train-data", "synthetic",
            "--synthetic-classes", "10", "--synthetic-steps", "2", "--batch-size", "4", "--epochs", "1",
            "--precision", "amp", "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, args + (["--amp-dtype", given] if given else []))
    assert result.exit_code == 0, result.output
    assert f"amp ({recorded})" in result.output
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "summary.json").read_text())["amp_dtype"] == recorded
    assert json.loads((run / "config.json").read_text())["amp_dtype"] == (given or "bf16")


@pytest.mark.parametrize("device, mode", [("cpu", "reduce-overhead"), ("sdaa", "max-autotune")])
def test_an_unsupported_compile_mode_is_refused_in_one_line(tmp_path, standin, device, mode):
    standin()
    result = CliRunner().invoke(main, ["run", "--device", device, "--train-data", "synthetic", "--compile-mode",
                                       mode, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"--compile-mode {mode} is not supported on {device}" in lines[0], result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # refused before a run dir


@pytest.mark.parametrize("name, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.5e12),  # SXM
    ("NVIDIA H100 PCIe", torch.bfloat16, 756.5e12),
    ("NVIDIA H100 PCIe", torch.float32, 51e12),
    ("NVIDIA H100 NVL", torch.float16, 835.5e12),
    ("NVIDIA H200", torch.bfloat16, 989.5e12),  # SXM
    ("NVIDIA H200 NVL", torch.bfloat16, 835.5e12),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12),
    ("NVIDIA A100 80GB PCIe", torch.float16, 312e12),
    ("NVIDIA L40S", torch.bfloat16, 362.05e12),
])
def test_peaks_are_per_form_factor(name, dtype, peak):
    from arcbench.plugins.devices.cuda import peak_flops_for

    assert peak_flops_for(name, dtype) == peak


def test_mfu_uses_the_peak_of_the_dtype_that_ran(monkeypatch):
    """A bf16 amp row on a card whose plugin default is fp16 takes the bf16 peak."""
    from arcbench.bench import grid as bench
    from arcbench.config import RunConfig

    seen = []

    class Card:
        amp_dtype = torch.float16

        def peak_flops(self, dtype):
            seen.append(dtype)
            return 1e15

        def precision_label(self, p):
            return p

    monkeypatch.setattr(bench, "step_flops", lambda *a, **k: 10 ** 9)
    rows = [{"backbone": "tiny", "mode": "train", "precision": p, "amp_dtype": d, "nproc": 1,
             "per_process_batch": 4, "num_classes": 10, "sample_rate": 1.0, "throughput_median": 100.0}
            for p, d in (("fp32", None), ("amp", "bfloat16"))]
    bench.derive(rows, Card(), RunConfig(head="arcface"))
    assert seen == [torch.float32, torch.bfloat16]
