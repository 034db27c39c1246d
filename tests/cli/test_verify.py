"""`arcbench verify` on the real reference photos with the real reference weights."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from arcbench.cli import main
from arcbench.cli.verify import DEFAULT_THRESHOLD


def _invoke(reference_dir, a, b, *extra, json_out=True):
    def photo(name):
        return name if "/" in name else str(reference_dir / "faces" / name)

    args = ["verify", photo(a), photo(b), "--weights", str(reference_dir / "arcface_mobilefacenet.pth"), *extra]
    return CliRunner().invoke(main, args + (["--json"] if json_out else []))


@pytest.fixture()
def verify(reference_dir, monkeypatch):
    monkeypatch.delenv("ARCBENCH_DEBUG", raising=False)
    return lambda a, b, *extra, **kw: _invoke(reference_dir, a, b, *extra, **kw)


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def pairs(reference_dir):
    """The three pairs of reference photos, verified once for the whole module."""
    return {(a, b): _json(_invoke(reference_dir, a, b))
            for a, b in [("1_001.jpg", "1_002.jpg"), ("1_001.jpg", "2_001.jpg"), ("1_002.jpg", "2_001.jpg")]}


def test_same_person(pairs):
    out = pairs["1_001.jpg", "1_002.jpg"]
    assert list(out) == ["distance", "cosine", "same", "threshold", "engine"]
    assert out["same"] is True and out["threshold"] == DEFAULT_THRESHOLD
    assert 0 < out["distance"] < out["threshold"]
    # unit embeddings: |a - b|^2 = 2 - 2 cos
    assert out["cosine"] == pytest.approx(1 - out["distance"] ** 2 / 2, abs=1e-4)


def test_different_people(pairs):
    for key in [("1_001.jpg", "2_001.jpg"), ("1_002.jpg", "2_001.jpg")]:
        out = pairs[key]
        assert list(out) == ["distance", "cosine", "same", "threshold", "engine"]
        assert out["same"] is False and out["distance"] > out["threshold"], key


def test_same_person_is_well_separated_from_different_people(pairs):
    same = pairs["1_001.jpg", "1_002.jpg"]["distance"]
    diffs = [pairs[a, "2_001.jpg"]["distance"] for a in ("1_001.jpg", "1_002.jpg")]
    assert same < 0.9 and min(diffs) > 1.2
    assert min(diffs) - same > 0.4, (same, diffs)


def test_identical_photo_has_zero_distance(verify):
    out = _json(verify("1_001.jpg", "1_001.jpg", "--flip"))
    assert out["distance"] == pytest.approx(0, abs=1e-5) and out["cosine"] == pytest.approx(1, abs=1e-5)


def test_threshold_option_decides(verify, pairs):
    out = _json(verify("1_001.jpg", "2_001.jpg", "--threshold", "1.9"))
    assert out["threshold"] == 1.9 and out["same"] is True
    assert out["distance"] == pairs["1_001.jpg", "2_001.jpg"]["distance"]


def test_text_output(verify):
    result = verify("1_001.jpg", "1_002.jpg", json_out=False)
    assert result.exit_code == 0, result.output
    assert "same person" in result.output and "distance 0." in result.output


def test_missing_image_is_a_one_line_error_naming_the_file(verify, tmp_path):
    missing = str(tmp_path / "nobody.jpg")
    result = verify("1_001.jpg", missing)
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line == f"arcbench: error: {missing}: image not found"


def test_bad_weights_are_a_one_line_error(verify, tmp_path, reference_dir):
    missing = tmp_path / "none.pth"
    result = CliRunner().invoke(main, ["verify", str(reference_dir / "faces" / "1_001.jpg"),
                                       str(reference_dir / "faces" / "1_002.jpg"), "--weights", str(missing)])
    assert result.exit_code == 2 and result.output.strip() == f"arcbench: error: {missing}: checkpoint not found"
    result = verify("1_001.jpg", "1_002.jpg", "--backbone", "mobilenetv1")
    assert result.exit_code == 2 and "weights do not match MobileNetV1" in result.output
    assert result.output.strip().count("\n") == 0
