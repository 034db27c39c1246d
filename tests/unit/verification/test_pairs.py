"""Pairs-file parsing (reference and official LFW formats) and path resolution."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest

from arcbench.verification.pairs import image_path, load_pairs, parse_pairs, resolve_pairs
from arcbench.errors import ArcbenchError
from arcbench.verification.protocol import contiguous_folds
from arcbench.verification.load import load_verification


def write(tmp_path, text, name="pairs.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def touch(root, name, idx):
    path = image_path(root, name, idx)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return path


# ------------------------------------------------------------- the real file

def test_reference_lfw_pair_parses_to_the_protocol(reference_dir):
    parsed = parse_pairs(reference_dir / "lfw_pair.txt")
    assert (parsed.n_folds, parsed.per_fold, parsed.has_header) == (10, 300, True)
    assert len(parsed) == 6000
    assert sum(p.issame for p in parsed.pairs) == 3000
    assert Counter(p.fold for p in parsed.pairs) == {f: 600 for f in range(10)}
    # each fold: 300 positives, then 300 negatives, in file order
    for f in range(10):
        block = parsed.pairs[600 * f: 600 * (f + 1)]
        assert all(p.fold == f for p in block)
        assert [p.issame for p in block] == [True] * 300 + [False] * 300
    first, last = parsed.pairs[0], parsed.pairs[-1]
    assert (first.line, first.name1, first.idx1, first.name2, first.idx2) == (2, "Abel_Pacheco", 1, "Abel_Pacheco", 4)
    assert last.line == 6001 and not last.issame
    assert all(p.name1 == p.name2 for p in parsed.pairs if p.issame)


def test_reference_pairs_against_a_partial_image_folder(reference_dir, tmp_path):
    parsed = parse_pairs(reference_dir / "lfw_pair.txt")
    root = tmp_path / "lfw"
    # Provide both images of the first 5 pairs of every fold, and one image of the 6th.
    present = set()
    for f in range(10):
        for p in parsed.pairs[600 * f: 600 * f + 5]:
            present.add(touch(root, p.name1, p.idx1))
            present.add(touch(root, p.name2, p.idx2))
        p6 = parsed.pairs[600 * f + 5]
        present.add(touch(root, p6.name1, p6.idx1))
    expected = [p for p in parsed.pairs
                if image_path(root, p.name1, p.idx1) in present and image_path(root, p.name2, p.idx2) in present]
    vset = resolve_pairs(parsed, root)
    assert len(vset) == len(expected) >= 50
    assert vset.pairs_skipped == 6000 - len(expected)
    assert vset.name == "LFW"
    assert list(vset.lines) == [p.line for p in expected]
    assert sorted(set(vset.folds.tolist())) == list(range(10))
    # every image listed once, and each pair points at its own files
    assert len(set(vset.images)) == len(vset.images)
    for (a, b), p in zip(vset.pairs, expected):
        assert vset.images[a] == image_path(root, p.name1, p.idx1)
        assert vset.images[b] == image_path(root, p.name2, p.idx2)

    with pytest.raises(ArcbenchError) as err:
        resolve_pairs(parsed, root, strict=True)
    p6 = parsed.pairs[5]
    assert err.value.line == p6.line
    assert image_path(root, p6.name2, p6.idx2) in str(err.value)
    assert str(err.value).startswith(f"{reference_dir / 'lfw_pair.txt'}:{p6.line}: image not found")


# ------------------------------------------------------------- other shapes

OFFICIAL = """2 2
Alice 1 2
Bob 1 3
Alice 1 Bob 2
Carol 2 Bob 1
Alice 2 3
Carol 1 2
Alice 3 Carol 1
Bob 2 Carol 2
"""


def test_official_format_with_spaces_and_crlf(tmp_path):
    path = write(tmp_path, OFFICIAL.replace("\n", "\r\n"))
    parsed = parse_pairs(path)
    assert (parsed.n_folds, parsed.per_fold) == (2, 2)
    assert [p.issame for p in parsed.pairs] == [True, True, False, False] * 2
    assert [p.fold for p in parsed.pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert asdict(parsed.pairs[2]) == dict(line=4, name1="Alice", idx1=1, name2="Bob", idx2=2,
                                           issame=False, fold=0)


def test_resolve_deduplicates_images_and_names_the_set(tmp_path):
    root = tmp_path / "faces"
    for name, idx in [("Alice", 1), ("Alice", 2), ("Alice", 3), ("Bob", 1), ("Bob", 2), ("Bob", 3),
                      ("Carol", 1), ("Carol", 2)]:
        touch(root, name, idx)
    vset = load_pairs(root, write(tmp_path, OFFICIAL, "mypairs.txt"))
    assert len(vset) == 8 and vset.pairs_skipped == 0
    assert vset.num_images == 8          # 16 image slots, 8 distinct files
    assert vset.name == "mypairs"
    assert vset.issame.tolist() == [True, True, False, False] * 2
    assert vset.images[vset.pairs[0, 0]].endswith(os.path.join("Alice", "Alice_0001.jpg"))


def test_headerless_and_single_number_headers(tmp_path):
    lines = [f"P{i} 1 2" if i % 2 == 0 else f"P{i} 1 Q{i} 1" for i in range(25)]
    parsed = parse_pairs(write(tmp_path, "\n".join(lines) + "\n\n"))
    assert not parsed.has_header and parsed.n_folds == 10 and len(parsed) == 25
    # KFold(10) sizes for 25 items: five folds of 3, then five of 2
    assert Counter(p.fold for p in parsed.pairs) == {**{f: 3 for f in range(5)}, **{f: 2 for f in range(5, 10)}}
    assert [p.issame for p in parsed.pairs] == [i % 2 == 0 for i in range(25)]

    parsed = parse_pairs(write(tmp_path, "1\nA 1 2\nA 1 B 1\n", "dev.txt"))
    assert (parsed.n_folds, parsed.per_fold, len(parsed)) == (1, 1, 2)


def test_contiguous_folds_match_kfold_sizes():
    assert contiguous_folds(7, 10).tolist() == list(range(7))
    assert np.bincount(contiguous_folds(6000)).tolist() == [600] * 10
    assert np.bincount(contiguous_folds(13, 4)).tolist() == [4, 3, 3, 3]


# ------------------------------------------------------------- malformed files

@pytest.mark.parametrize("text, line, words", [
    ("1 1\nA 1 2 3 4\nA 1 B 2\n", 2, "got 5"),                   # wrong column count
    ("1 1\nA 1 B 2\nA 1 B 2\n", 2, "positive pair"),             # negative where a positive belongs
    ("1 1\nA 1 2\nA 1 2\n", 3, "negative pair"),                 # positive where a negative belongs
    ("ten 300\nA 1 2\n", 1, "header"),                           # bad header
    ("1 0\n", 1, "bad header"),                                  # zero pairs per fold
    ("1 1\nA 1 x\nA 1 B 2\n", 2, "integer, got 'x'"),            # non-integer index
    ("1 1\nA 1 2\nA 1 B 2.5\n", 3, "integer, got '2.5'"),
    ("1 1\nA -1 2\nA 1 B 2\n", 2, "negative"),
    ("1 1\n.. 1 2\nA 1 B 2\n", 2, "bad person name"),
    ("2 1\nA 1 2\nA 1 B 2\nA 1 3\n", 1, "promises 2 folds x (2 x 1) = 4 pairs but the file has 3"),
    ("1 1\nA 1 2\nA 1 B 2\nA 2 3\n", 4, "more lines than the header"),
    ("A 1 2\nA 1 B 2\nA 1\n", 3, "got 2"),                       # header-less, short line
])
def test_malformed_pairs_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(ArcbenchError) as err:
        parse_pairs(path)
    assert err.value.line == line
    assert err.value.path == str(path)
    assert words in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(err.value)


def test_missing_empty_and_binary_pairs_files(tmp_path):
    with pytest.raises(ArcbenchError, match="not found"):
        parse_pairs(tmp_path / "nope.txt")
    with pytest.raises(ArcbenchError, match="empty"):
        parse_pairs(write(tmp_path, "\n\n"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ArcbenchError, match="not a text pairs file"):
        parse_pairs(tmp_path / "bin.txt")


def test_load_verification_combinations(tmp_path):
    pairs = write(tmp_path, OFFICIAL)
    with pytest.raises(ArcbenchError, match="no verification set"):
        load_verification()
    with pytest.raises(ArcbenchError, match="needs a pairs file"):
        load_verification(val_data=tmp_path)
    with pytest.raises(ArcbenchError, match="needs the image folder"):
        load_verification(val_pairs=pairs)
    with pytest.raises(ArcbenchError, match="not both"):
        load_verification(val_data=tmp_path, val_pairs=pairs, val_bin=tmp_path / "lfw.bin")
    with pytest.raises(ArcbenchError, match="image folder not found"):
        load_verification(val_data=tmp_path / "missing", val_pairs=pairs)
    with pytest.raises(ArcbenchError, match="none of the 8 pairs"):
        load_verification(val_data=tmp_path, val_pairs=pairs)
    with pytest.raises(ArcbenchError, match=".bin not found"):
        load_verification(val_data=tmp_path / "lfw.bin")       # a .bin as --val-data is read as one


def test_the_first_bad_line_in_file_order_is_reported(tmp_path):
    """A 400-pair file with a '10 20' header; line 6 made 'Some_Name<TAB>x<TAB>3' and one line too many:
    the error names line 6, not the excess line past it."""
    from arcbench.verification.pairs import parse_pairs
    from arcbench.errors import ArcbenchError

    lines = ["10\t20"]
    for fold in range(10):
        lines += [f"P{fold}_{i}\t1\t2" for i in range(20)] + [f"A{fold}_{i}\t1\tB{fold}_{i}\t1" for i in range(20)]
    good = tmp_path / "good.txt"
    good.write_text("\n".join(lines) + "\n")
    assert len(parse_pairs(good).pairs) == 400
    bad = list(lines)
    bad[5] = "Some_Name\tx\t3"
    p = tmp_path / "pairs.txt"
    p.write_text("\n".join(bad) + "\n")
    with pytest.raises(ArcbenchError) as e:
        parse_pairs(p)
    assert str(e.value).startswith(f"{p}:6:") and "image index" in str(e.value)
    bad.insert(5, "Extra_Name\t1\t2")  # now also one line more than the header promises
    p.write_text("\n".join(bad) + "\n")
    with pytest.raises(ArcbenchError) as e:
        parse_pairs(p)
    assert str(e.value).startswith(f"{p}:7:"), str(e.value)
    extra = lines + ["Late\t1\t2"]
    p.write_text("\n".join(extra) + "\n")
    with pytest.raises(ArcbenchError, match="more lines than the header") as e:
        parse_pairs(p)
    assert str(e.value).startswith(f"{p}:402:")
