"""Without OpenCV (the optional ``ijb`` extra), ``eval-ijb`` says in one line what to install."""
from __future__ import annotations

import sys

from click.testing import CliRunner

from arcbench.cli import main


def test_eval_ijb_without_opencv_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ImportError
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    res = CliRunner().invoke(main, ["eval-ijb", "--root", str(tmp_path), "--weights", str(weights)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'arcbench[ijb]'" in lines[0], res.output
