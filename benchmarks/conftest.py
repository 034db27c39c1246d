"""pytest-benchmark suite for arcbench: ``pytest benchmarks [--arcbench-device cuda] [--arcbench-short]``.

Options (besides every ``--benchmark-*`` option of pytest-benchmark):

``--arcbench-device NAME``  device plugin to measure (env ``ARCBENCH_DEVICE``, default ``cpu``).
    An unavailable device skips the device benchmarks with the plugin's reason.
``--arcbench-short``        CI mode: tiny batches and one timed round per benchmark (unless
    ``--benchmark-min-rounds`` / ``--benchmark-max-time`` are given), the big backbones skipped.

Benchmarks REPORT figures; none of them fails on a timing.  Every timed target
synchronises the device before it returns, and images/s (median round) is put in
``extra_info`` (see ``--benchmark-json``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("ARCBENCH_REFERENCE", REPO.parent / "shared" / "reference"))

# pytest-benchmark's own defaults; a value still equal to these was not given on the command line
_PB_DEFAULTS = {"benchmark_min_rounds": 5, "benchmark_max_time": "1.0"}
#: what --arcbench-short and the full mode use instead of those defaults (slow targets: seconds a call)
_MODE_DEFAULTS = {True: {"benchmark_min_rounds": 1, "benchmark_max_time": "0.05"},
                  False: {"benchmark_min_rounds": 3, "benchmark_max_time": "0.5"}}


def pytest_addoption(parser):
    group = parser.getgroup("arcbench", "arcbench benchmarks")
    group.addoption("--arcbench-device", default=os.environ.get("ARCBENCH_DEVICE", "cpu"),
                    help="device plugin to benchmark (env ARCBENCH_DEVICE; default cpu)")
    group.addoption("--arcbench-short", action="store_true", default=False,
                    help="CI mode: tiny batches, one round per benchmark, big backbones skipped")


def pytest_configure(config):
    # Runs before pytest-benchmark's (trylast) configure, which reads these options.
    short = bool(config.getoption("arcbench_short"))
    args = [str(a) for a in config.invocation_params.args] + os.environ.get("PYTEST_ADDOPTS", "").split()
    for name, default in _PB_DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        given = any(a == flag or a.startswith(flag + "=") for a in args)
        value = getattr(config.option, name, None)
        if not given and value is not None and str(value) == str(default):
            setattr(config.option, name, _MODE_DEFAULTS[short][name])


def pytest_report_header(config):
    import torch

    return (f"arcbench: device={config.getoption('arcbench_device')} "
            f"mode={'short' if config.getoption('arcbench_short') else 'full'} "
            f"torch={torch.__version__} threads={torch.get_num_threads()}")


@pytest.fixture(scope="session")
def short(request) -> bool:
    return bool(request.config.getoption("arcbench_short"))


@pytest.fixture(scope="session")
def device(request):
    """The arcbench Device under test, or skip with the plugin's reason."""
    from arcbench import registry
    from arcbench.errors import ArcbenchError

    name = request.config.getoption("arcbench_device")
    try:
        dev = registry.get_device(name)
    except ArcbenchError as exc:
        pytest.exit(f"--arcbench-device: {exc}", returncode=4)
    ok, reason = dev.is_available()
    if not ok:
        pytest.skip(f"device {dev.name!r}: {reason}")
    dev.bind(0)
    return dev


@pytest.fixture(scope="session")
def tdev(device):
    return device.torch_device()


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "arcface_mobilefacenet.pth").is_file():
        pytest.skip(f"reference data not found at {REFERENCE} (set ARCBENCH_REFERENCE)")
    return REFERENCE


@pytest.fixture
def timed(benchmark):
    """``timed(fn, device, images=N, rates={"pairs": M}, **extra)``: see :func:`run_timed`."""
    def call(fn, device=None, *, images: int = 0, rates=None, **info):
        return run_timed(benchmark, fn, device, images=images, rates=rates, **info)
    return call


@pytest.fixture
def accelerator(device):
    """The device, or skip: the benchmark means nothing on the host CPU."""
    if device.torch_device().type == "cpu":
        pytest.skip("needs an accelerator (--arcbench-device cuda / sdaa); skipped on cpu")
    return device


def run_timed(benchmark, fn, device=None, *, images: int = 0, rates=None, **info):
    """``benchmark(fn)`` with the device synchronised inside the timed call; fills extra_info.

    ``images``: images per call -> extra_info ``img_per_s`` (median round) and ``img_per_s_mean``.
    ``rates``: other units per call, e.g. ``{"pairs": 6000}`` -> ``pairs_per_s``.
    """
    sync = device.synchronize if device is not None else (lambda: None)

    def target():
        out = fn()
        sync()
        return out

    if device is not None:
        sync()
    result = benchmark(target)
    extra = benchmark.extra_info
    extra.update(info)
    if device is not None:
        extra["device"] = device.name
    per_call = dict(rates or {})
    if images:
        extra["images_per_call"] = images
        per_call["img"] = images
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)  # None with --benchmark-disable
    if stats is not None:
        for unit, n in per_call.items():
            extra[f"{unit}_per_s"] = round(n / stats.median, 3) if stats.median else None
        if images and stats.mean:
            extra["img_per_s_mean"] = round(images / stats.mean, 3)
    return result
