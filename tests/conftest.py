"""Shared fixtures.  ``../shared/reference`` holds real weights, pairs and photos."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("ARCBENCH_REFERENCE", REPO.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared reference folder, or skip with the reason."""
    if not (REFERENCE / "arcface_mobilefacenet.pth").is_file():
        pytest.skip(f"reference data not found at {REFERENCE} (set ARCBENCH_REFERENCE)")
    return REFERENCE


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Keep tests deterministic and polite on 2-core CI machines.
    monkeypatch.setenv("ARCBENCH_TEST", "1")
    yield
