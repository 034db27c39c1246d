"""No import cycles in arcbench, and imports point one way: each module can be read top-down,
and imports cleanly on its own.

The static check follows every import, including the ones inside functions (a
lazy import hides a cycle from Python but not from a reader); the dynamic check
imports every module in a fresh interpreter, the most dependent ones first, the
order in which a module-level cycle meets a half-initialised module.  Direction:
the core (``harness/``, the ``arcbench`` package less ``arcbench.plugins`` and
``arcbench.reports``) never imports a plugin; it reaches plugins only through the
hooks (the built-ins are loaded by name, a string list in ``plugin_manager``).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys

import arcbench


def _modules() -> dict:
    """Every module of the arcbench package (plugins and reports included) and its source file."""
    import arcbench.plugins
    import arcbench.reports

    found = {}
    # plugins/ and reports/ live beside harness/ in the source tree: walk each package's own path
    for package in (arcbench, arcbench.plugins, arcbench.reports):
        found[package.__name__] = importlib.util.find_spec(package.__name__).origin
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            found[info.name] = importlib.util.find_spec(info.name).origin
    return found


def _imports(name: str, path: str, known: dict) -> set:
    """The arcbench modules that ``name`` imports anywhere in its source."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else (node.module or "")
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module itself
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)  # (a module importing its own package's __init__ is no cycle of its making)
    return out


def _graph() -> dict:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _cycle(graph: dict):
    """One import cycle as a list of module names, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_back_into_its_importers():
    graph = _graph()
    assert {"arcbench.run.runner", "arcbench.run.worker", "arcbench.run.launcher", "arcbench.verification.sets",
            "arcbench.verification.pairs", "arcbench.plugin_manager", "arcbench.plugins.heads.partial_fc"} <= set(graph)
    assert "arcbench.verification.pairs" in graph["arcbench.verification.load"]  # the checker sees lazy imports
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_in_a_fresh_interpreter_most_dependent_first():
    graph = _graph()
    depth: dict = {}

    def reach(name, seen=()):
        if name not in depth:
            depth[name] = 1 + max((reach(d, seen + (name,)) for d in graph[name] if d not in seen), default=0)
        return depth[name]

    # (``arcbench.__main__`` is the ``python -m arcbench`` entry: importing it runs the command line)
    order = sorted((n for n in graph if not n.endswith(".__main__")), key=lambda n: (-reach(n), n))
    code = ("import importlib, json, sys\n"
            "failed = []\n"
            f"for name in {order!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as exc:\n"
            "        failed.append([name, f'{type(exc).__name__}: {exc}'])\n"
            "print(json.dumps(failed))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _is_core(name: str) -> bool:
    return not any(name == side or name.startswith(side + ".") for side in ("arcbench.plugins", "arcbench.reports"))


def _core_imports_of_plugins(graph: dict) -> list:
    """(core module, plugin module) for every import from the core into ``arcbench.plugins``."""
    return sorted((name, target) for name, targets in graph.items() if _is_core(name)
                  for target in targets if target == "arcbench.plugins" or target.startswith("arcbench.plugins."))


def test_the_direction_check_sees_a_lazy_import_of_a_plugin(tmp_path):
    source = tmp_path / "planted.py"
    source.write_text("def clip():\n    from ..plugins.heads.sharding import clip_grad_norm_\n"
                      "    return clip_grad_norm_\n")
    known = {name: "" for name in ("arcbench", "arcbench.train", "arcbench.plugins", "arcbench.plugins.heads",
                                   "arcbench.plugins.heads.sharding")}
    graph = {"arcbench.train.planted": _imports("arcbench.train.planted", str(source), known),
             "arcbench.plugins.heads.partial_fc": {"arcbench.plugins.heads.sharding"}}  # plugin to plugin: fine
    assert ("arcbench.train.planted", "arcbench.plugins.heads.sharding") in _core_imports_of_plugins(graph)
    assert not [pair for pair in _core_imports_of_plugins(graph) if pair[0].startswith("arcbench.plugins")]


def test_the_core_never_imports_a_plugin():
    """harness/ reaches plugins only through hooks; a head's checkpoint state, clipping and plan
    are hooks of the head contract (arcbench.head), not imports of Partial FC's modules."""
    graph = _graph()
    assert "arcbench.train.trainer" in graph and "arcbench.plugins.heads.partial_fc" in graph
    found = _core_imports_of_plugins(graph)
    assert found == [], "the core imports plugins: " + ", ".join(f"{a} -> {b}" for a, b in found)
