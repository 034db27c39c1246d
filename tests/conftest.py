"""Shared fixtures.  ``../shared/reference`` holds real weights, pairs and photos."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the shared helpers (testutil, report_fixtures) and the stand-in plugins import by plain name from
# every test folder
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "standins")]
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


@pytest.fixture(scope="session")
def faces(tmp_path_factory):
    """A tiny generated face set: 8 identities x 6 images (6 steps an epoch at batch 8), 20 held-out
    identities; ``testutil.data_args(faces)`` gives the run flags.  Modules with other needs override it."""
    from arcbench.data.synth import generate

    root = tmp_path_factory.mktemp("faces")
    generate(root, identities=8, images_per_identity=6, verify_identities=20, verify_images=2, pairs=2, workers=0)
    return root


@pytest.fixture()
def tiny(monkeypatch):
    """The third-party-style ``tinyplugin`` loaded (also for launched workers), reset, then unloaded."""
    from arcbench import plugin_manager

    from testutil import IMPORT_PATH

    monkeypatch.setenv("PYTHONPATH", IMPORT_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv(plugin_manager.PLUGIN_MODULES_ENV, raising=False)
    import tinyplugin

    plugin_manager.load_plugin_module("tinyplugin")
    tinyplugin.INTERRUPT_AT = None
    tinyplugin.reset_calls()
    yield tinyplugin
    tinyplugin.INTERRUPT_AT = None
    plugin_manager.unregister_plugin("tinyplugin")
