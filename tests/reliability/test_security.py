"""Security: no code runs from data files, plugins load only when asked, runs stay in --out.

* every ``torch.load`` passes ``weights_only=True`` and nothing else unpickles, bar
  the restricted .bin unpickler (checked on the source with ``ast``);
* the .bin unpickler refuses every way a pickle can reach a callable;
* third-party plugins come only from entry points or an explicit ``--plugin``;
* run ids are sanitised and a run writes nothing outside its output directory.
"""
from __future__ import annotations

import ast
import copyreg
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arcbench.verification.binset import DataOnlyUnpickler, read_bin, safe_loads
from arcbench.errors import ArcbenchError

from .conftest import arcbench_exe, cli, invoke, only_run_dir, summary, train_args

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("harness", "plugins", "reports") for p in (REPO / d).rglob("*.py"))
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


# ------------------------------------------------------------------ no unsafe deserialisation in the code
def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def unsafe_loads(path: Path) -> list:
    """``file:line what`` for each call that could unpickle arbitrary objects."""
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    restricted = set()  # classes deriving from pickle.Unpickler that override find_class
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_dotted(b).endswith("Unpickler") for b in node.bases):
            if any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
                restricted.add(node.name)
            else:
                problems.append(f"{path}:{node.lineno} Unpickler subclass without find_class")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in UNSAFE_MODULES:
            for alias in node.names:
                if alias.name in ("load", "loads", "Unpickler", "open"):
                    problems.append(f"{path}:{node.lineno} from {node.module} import {alias.name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, last = name.rpartition(".")
        where = f"{path}:{node.lineno} {name}("
        if name in ("torch.load", "torch.serialization.load"):
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                problems.append(where + " without weights_only=True")
        elif head in UNSAFE_MODULES and last in ("load", "loads", "Unpickler", "open"):
            problems.append(where)
        elif name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                problems.append(where + " with allow_pickle")
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            problems.append(where)
        elif name in ("eval", "exec", "compile"):
            problems.append(where)
        elif name == "__import__" and not (node.args and isinstance(node.args[0], ast.Constant)):
            problems.append(where)
    return problems


def test_source_files_were_found():
    assert len(SOURCES) > 20 and any(p.name == "weights.py" for p in SOURCES)


def test_every_load_is_weights_only_and_nothing_else_unpickles():
    problems = [p for src in SOURCES for p in unsafe_loads(src)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, torch\nfrom pickle import loads\n"
                   "torch.load('a')\ntorch.load('a', weights_only=False)\npickle.load(f)\n"
                   "class U(pickle.Unpickler):\n    pass\n")
    assert len(unsafe_loads(bad)) == 5
    good = tmp_path / "good.py"
    good.write_text("import torch, pickle\ntorch.load('a', map_location='cpu', weights_only=True)\n"
                    "class U(pickle.Unpickler):\n    def find_class(self, m, n):\n        raise Exception\n")
    assert unsafe_loads(good) == []


def test_legacy_checkpoint_that_needs_more_gets_a_clear_message(tmp_path):
    import numpy as np

    from arcbench.inference.weights import load_file

    path = tmp_path / "legacy.pth"
    torch.save({"conv.weight": np.zeros(3), "epoch": np.int64(3)}, path)
    with pytest.raises(ArcbenchError) as info:
        load_file(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "refusing to load" in msg and "numpy" in msg
    assert "state_dict" in msg and "\n" not in msg


# ------------------------------------------------------------------ the restricted .bin unpickler
class Marker:
    def __init__(self, marker: Path, func=os.system):
        self.marker, self.func = str(marker), func

    def __reduce__(self):
        return (self.func, (f"touch {self.marker}",))


def hostile_pickles(marker: Path) -> dict:
    cmd = f"touch {marker}".encode()
    out = {f"reduce-proto{p}": pickle.dumps(([b"x", b"y"], [Marker(marker)]), protocol=p) for p in range(6)}
    out["subprocess"] = pickle.dumps(Marker(marker, subprocess.call), protocol=2)
    out["global-eval"] = b"cbuiltins\neval\n(V__import__('os').system('" + cmd + b"')\ntR."
    out["global-exec"] = b"c__builtin__\nexec\n(S'import os; os.system(\"" + cmd + b"\")'\ntR."
    out["inst"] = b"(S'" + cmd + b"'\nios\nsystem\n."
    out["stack-global"] = (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c"
                           + bytes([len(cmd)]) + cmd + b"\x85R.")
    out["getattr-chain"] = b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V" + cmd + b"\ntR."
    out["persistent-id"] = b"\x80\x02X\x03\x00\x00\x00abcQ."
    out["codecs-not-latin1"] = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    out["bytearray-size"] = b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00\x40\x85R."  # would allocate 1 GiB
    return out


@pytest.mark.parametrize("case", sorted(hostile_pickles(Path("/x"))))
def test_bin_unpickler_refuses_code(tmp_path, case):
    marker = tmp_path / "PAYLOAD_RAN"
    data = hostile_pickles(marker)[case]
    with pytest.raises(ArcbenchError) as info:
        safe_loads(data, "evil.bin")
    assert str(info.value).startswith("evil.bin: ")
    if case != "persistent-id":
        assert "refusing" in str(info.value) or "not a readable pickle" in str(info.value)
    assert not marker.exists(), "the pickle's payload ran"
    path = tmp_path / "evil.bin"
    path.write_bytes(data)
    with pytest.raises(ArcbenchError):
        read_bin(path)
    assert not marker.exists()


def test_bin_unpickler_refuses_extension_registry_codes(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    module = os.system.__module__  # posix
    copyreg.add_extension(module, "system", 0x7ABC)
    try:
        data = pickle.dumps(Marker(marker), protocol=2)
        assert b"\x83" in data and b"system" not in data  # EXT2 instead of a named global
        with pytest.raises(ArcbenchError, match="refusing"):
            safe_loads(data)
    finally:
        copyreg.remove_extension(module, "system", 0x7ABC)
    assert not marker.exists()


def test_bin_unpickler_reads_real_layouts():
    jpeg = b"\xff\xd8\xff\xe0 not really a jpeg"
    for proto in range(6):
        images, issame = safe_loads(pickle.dumps(([jpeg, bytearray(jpeg)], [True]), protocol=proto))
        assert bytes(images[0]) == jpeg and bytes(images[1]) == jpeg and issame == [True]
    # Python 2 pickles keep str payloads as bytes
    py2 = b"\x80\x02]q\x00(U\x04abcdq\x01U\x04efghq\x02e]q\x03\x88a\x86q\x04."
    assert safe_loads(py2) == ([b"abcd", b"efgh"], [True])
    assert issubclass(DataOnlyUnpickler, pickle.Unpickler)


# ------------------------------------------------------------------ plugins load only when asked
PLUGIN_LOOKALIKES = ("arcbench_plugin", "arcbench_evil", "arcbench_cpu", "plugins", "reports", "hookspecs",
                     "arcbench_plugins", "conftest")


def _plant(folder: Path, marker_dir: Path) -> None:
    hook = ("from arcbench import hookimpl\n"
            "import torch\n@hookimpl\ndef register_backbones(register):\n"
            "    register('planted', lambda **kw: torch.nn.Linear(2, 8), embedding_size=8)\n")
    for name in PLUGIN_LOOKALIKES:
        (folder / f"{name}.py").write_text(
            f"open({str(marker_dir / name)!r}, 'w').close()\n" + hook)
    pkg = folder / "arcbench_pkgplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"open({str(marker_dir / 'pkg')!r}, 'w').close()\n")


@pytest.mark.parametrize("how", ["console-script", "python-m"])
def test_modules_in_the_working_directory_are_not_imported(tmp_path, how):
    cwd, markers = tmp_path / "cwd", tmp_path / "markers"
    cwd.mkdir()
    markers.mkdir()
    _plant(cwd, markers)
    exe = arcbench_exe() if how == "console-script" else [sys.executable, "-m", "arcbench"]
    for args in (["plugins"], ["backbones"], ["devices"]):
        r = subprocess.run(exe + args, cwd=cwd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "planted" not in r.stdout
    assert sorted(os.listdir(markers)) == [], "a module in the working directory was imported"


def test_an_explicit_plugin_is_imported(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    _plant(tmp_path, markers)
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = cli(["--plugin", "arcbench_evil", "plugins"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "arcbench_evil" in r.stdout and os.listdir(markers) == ["arcbench_evil"]


def test_plugin_loading_is_documented():
    text = (REPO / "docs" / "GUARANTEES.md").read_text()
    assert "--plugin" in text and "entry point" in text and "ARCBENCH_LOAD_PLUGINS" in text


# ------------------------------------------------------------------ run ids and the output directory
EVIL_IDS = ["../../evil", "..", "/etc/evil", "a/../../b", "~/evil", "$(touch pwned)", "evil\\..\\..\\x",
            ".hidden", "x" * 400, "ünïcødé/../../é", "-rf", "a b\tc"]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_run_ids_are_sanitised_and_stay_inside_out(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("untouched")
    before = _tree(tmp_path)
    for i, rid in enumerate(EVIL_IDS):
        out = work / f"runs{i}"
        r = invoke(train_args(out, "--train-data", "synthetic", "--synthetic-classes", "4", "--synthetic-steps",
                              "1", "--run-id", rid))
        if rid == "..":
            assert r.exit_code == 2 and "invalid run id" in r.stderr
            continue
        assert r.exit_code == 0, (rid, r.output)
        d = only_run_dir(out)
        assert d.parent == out and ".." != d.name and "/" not in d.name and not d.name.startswith(".")
        assert len(d.name) <= 128 and summary(d)["run_id"] == d.name
    after = _tree(tmp_path)
    outside = [p for p in set(after) - set(before) if not p.startswith("work/runs")]
    assert outside == [], outside
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


@pytest.mark.slow
def test_a_run_writes_nothing_outside_its_output_directory(faces, tmp_path):
    """Data, working directory and home are untouched; only --out changes (caches excepted)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(faces, data)
    cwd, home, out = tmp_path / "cwd", tmp_path / "home", tmp_path / "out"
    cwd.mkdir()
    home.mkdir()
    before = _tree(tmp_path)
    env = dict(os.environ, HOME=str(home), MPLCONFIGDIR=str(tmp_path / "mplcache"),
               ARCBENCH_CACHE=str(tmp_path / "cache"), XDG_CACHE_HOME=str(tmp_path / "xdgcache"))
    r = cli(train_args(out, "--train-data", data / "train", "--val-data", data / "verify", "--val-pairs",
                       data / "pairs.txt", "--checkpoint-steps", "2"), cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    assert summary(only_run_dir(out))["status"] == "completed"
    after = _tree(tmp_path)
    changed = {p for p in set(after) | set(before) if before.get(p) != after.get(p)}
    caches = ("mplcache", "cache", "xdgcache")
    stray = sorted(p for p in changed if not p.startswith(("out",) + caches))
    assert stray == [], f"written outside --out: {stray}"
