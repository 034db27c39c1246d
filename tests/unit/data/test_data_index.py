"""Identity-folder scanning and the cls_train.txt format."""
from __future__ import annotations

import os

import pytest

from arcbench.data.index import index_folder, read_annotation, scan_folder, write_annotation
from arcbench.errors import ArcbenchError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    # unsorted creation order, mixed-case extensions, non-images and hidden entries ignored
    for rel in ["carol/2.JPG", "carol/1.png", "alice/b.jpeg", "alice/a.jpg", "alice/notes.txt",
                "alice/.hidden.jpg", "dave/x.WebP", "dave/y.bmp", ".cache/z.jpg"]:
        _touch(root / rel)
    (root / "bob").mkdir()  # empty identity folder
    (root / "README.txt").write_text("not an identity")
    return root


def test_scan_sorted_labels_and_empty_folders(tree):
    with pytest.warns(UserWarning, match="1 empty identity"):
        scan = scan_folder(tree)
    assert scan.identities == ["alice", "bob", "carol", "dave"]
    names = [os.path.relpath(p, tree) for p in scan.paths]
    assert names == ["alice/a.jpg", "alice/b.jpeg", "carol/1.png", "carol/2.JPG", "dave/x.WebP", "dave/y.bmp"]
    # bob is empty: no lines, but its label 1 stays reserved so carol keeps label 2
    assert scan.labels == [0, 0, 2, 2, 3, 3]
    assert scan.empty_identities == ["bob"] and scan.empty_count == 1
    assert scan.num_classes == 4
    assert all(os.path.isabs(p) for p in scan.paths)


def test_index_round_trip(tree, tmp_path):
    out = tmp_path / "cls_train.txt"
    scan = index_folder(tree, out, warn=False)
    text = out.read_text()
    assert text.splitlines()[0] == f"0;{tree / 'alice' / 'a.jpg'}"
    paths, labels = read_annotation(out)
    assert paths == scan.paths and labels == scan.labels


def test_scan_errors(tmp_path):
    with pytest.raises(ArcbenchError, match="not a folder"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArcbenchError, match="no identity folders"):
        scan_folder(tmp_path / "empty")
    (tmp_path / "empty" / "p").mkdir()
    with pytest.raises(ArcbenchError, match="no images"):
        scan_folder(tmp_path / "empty", warn=False)


@pytest.mark.parametrize("bad, what", [
    ("no separator here", "expected '<label>;<image path>'"),
    ("x;a.jpg", "not an integer"),
    ("1.5;a.jpg", "not an integer"),
    ("-1;a.jpg", "negative"),
    ("3;   ", "empty image path"),
])
def test_malformed_lines_name_file_and_line(tmp_path, bad, what):
    ann = tmp_path / "cls_train.txt"
    ann.write_text(f"0;a.jpg\n\n{bad}\n1;b.jpg\n")
    with pytest.raises(ArcbenchError) as info:
        read_annotation(ann)
    err = info.value
    assert err.path == str(ann) and err.line == 3  # 1-based, blank lines counted
    assert what in str(err) and str(err).startswith(f"{ann}:3: ")
    assert "\n" not in str(err)


def test_relative_paths_crlf_and_semicolons(tmp_path):
    ann = tmp_path / "sub" / "list.txt"
    ann.parent.mkdir()
    ann.write_bytes(b"0;imgs/a.jpg\r\n 1 ; imgs/b;c.jpg \r\n2;/abs/x.jpg\r\n")
    paths, labels = read_annotation(ann)
    assert labels == [0, 1, 2]
    assert paths == [str(tmp_path / "sub" / "imgs" / "a.jpg"), str(tmp_path / "sub" / "imgs" / "b;c.jpg"),
                     "/abs/x.jpg"]
    paths, _ = read_annotation(ann, root=tmp_path / "elsewhere")
    assert paths[0] == str(tmp_path / "elsewhere" / "imgs" / "a.jpg")


def test_missing_images_only_checked_on_request(tmp_path):
    _touch(tmp_path / "a.jpg")
    ann = tmp_path / "list.txt"
    ann.write_text("0;a.jpg\n1;missing.jpg\n")
    assert read_annotation(ann)[1] == [0, 1]
    with pytest.raises(ArcbenchError) as info:
        read_annotation(ann, check_exists=True)
    assert info.value.line == 2 and "missing.jpg" in str(info.value)


def test_missing_and_empty_annotation(tmp_path):
    with pytest.raises(ArcbenchError, match="not found"):
        read_annotation(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ArcbenchError, match="no entries"):
        read_annotation(tmp_path / "empty.txt")


def test_non_utf8_names_round_trip(tmp_path):
    odd = "/data/caf\udce9/1.jpg"  # a Latin-1 byte in a file name, as os.fsdecode gives it
    write_annotation(tmp_path / "l.txt", [odd, "/data/b/2.jpg"], [0, 1])
    assert read_annotation(tmp_path / "l.txt") == ([odd, "/data/b/2.jpg"], [0, 1])
