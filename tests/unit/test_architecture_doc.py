"""docs/ARCHITECTURE.md is the map a newcomer reads beside the code: it names every module, and
every file it names exists.

A module added without a line in the map, or a map line left behind by a rename, fails here.
Paths are written as in the tree: ``run/runner.py`` for ``harness/run/runner.py`` (the ``arcbench``
package), ``plugins/heads/margins.py``, ``reports/runs.py``; other files by their repository path.
"""
from __future__ import annotations

import re

import pytest
from testutil import REPO

DOC = REPO / "docs" / "ARCHITECTURE.md"
#: an ``__init__.py`` that only marks a package (docstring or nothing) is not a module to explain
TRIVIAL_INIT = re.compile(r'\A\s*(""".*?"""\s*)?\Z', re.S)


def _modules() -> list:
    """``(written name, path)`` of every module under harness/, plugins/ and reports/."""
    found = []
    for root, prefix in (("harness", ""), ("plugins", "plugins/"), ("reports", "reports/")):
        for path in sorted((REPO / root).rglob("*.py")):
            if path.name == "__main__.py" or (path.name == "__init__.py"
                                              and TRIVIAL_INIT.match(path.read_text(encoding="utf-8"))):
                continue
            found.append((prefix + path.relative_to(REPO / root).as_posix(), path))
    return found


def _named(text: str, name: str) -> bool:
    return re.search(r"(?<![\w/.])" + re.escape(name) + r"(?![\w])", text) is not None


def test_the_map_is_there_and_the_walk_finds_the_modules():
    names = [n for n, _ in _modules()]
    assert DOC.is_file()
    # the walk itself works: it sees modules of every kind, and it skips a bare package marker
    assert {"run/runner.py", "config.py", "plugins/heads/margins.py", "reports/runs.py"} <= set(names)
    assert "run/__init__.py" not in names and len(names) > 60


@pytest.mark.parametrize("name", [n for n, _ in _modules()])
def test_every_module_is_named_in_the_map(name):
    assert _named(DOC.read_text(encoding="utf-8"), name), f"docs/ARCHITECTURE.md does not name {name}"


def test_every_file_the_map_names_exists():
    text = DOC.read_text(encoding="utf-8")
    missing = []
    for name in sorted(set(re.findall(r"(?<![\w/.])((?:[\w]+/)*\w+\.py)\b", text))):
        candidates = [REPO / "harness" / name, REPO / name]
        if not any(c.is_file() for c in candidates):
            missing.append(name)
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_the_checker_sees_a_missing_module():
    text = "`run/runner.py` and `config.py`"
    assert _named(text, "run/runner.py") and _named(text, "config.py")
    assert not _named(text, "run/worker.py")
    assert not _named("`train/config.py`", "config.py")  # a path ending in the name is another file
