"""Which plugins are loaded: the built-ins, installed entry points and ``--plugin`` modules.

Built-in plugins are plain modules registered through the same hooks as
third-party ones.  Third-party plugins come only from the ``arcbench``
entry-point group or from an explicit ``--plugin MODULE``; nothing is
imported from the working directory by accident.  What the plugins register
is read by :mod:`arcbench.registry`.

``ARCBENCH_LOAD_PLUGINS`` (comma separated entry-point or distribution
names) restricts which installed third-party plugins load; set it to an
empty string to load none.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
from typing import Dict, List, Optional, Tuple

import pluggy

from . import hookspecs
from .errors import ArcbenchError

ENTRY_POINT_GROUP = "arcbench"

BUILTIN_PLUGINS = (
    "arcbench.plugins.devices.cpu",
    "arcbench.plugins.devices.cuda",
    "arcbench.plugins.devices.sdaa",
    "arcbench.plugins.backbones.mobilefacenet",
    "arcbench.plugins.backbones.mobilenetv1",
    "arcbench.plugins.backbones.iresnet",
    "arcbench.plugins.heads.margins",
    "arcbench.plugins.heads.partial_fc",
)

#: explicit ``--plugin`` modules, passed on to worker processes through the environment
PLUGIN_MODULES_ENV = "ARCBENCH_PLUGIN_MODULES"

pm = pluggy.PluginManager("arcbench")
pm.add_hookspecs(hookspecs)

_loaded = False
_dist_of: Dict[str, Tuple[str, str]] = {}  # plugin name -> (distribution, version)
#: bumped on every change of the registered set, so the registries know their cache is stale
generation = 0


def _changed() -> None:
    global generation
    generation += 1


def _entry_points():
    """``(entry_point, distribution)`` pairs of the ``arcbench`` group.

    Walks distributions rather than ``entry_points()`` so the distribution's
    name and version are known on Python 3.9 too (``EntryPoint.dist`` is 3.10+).
    """
    from importlib import metadata

    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                yield ep, dist


def _norm(name: str) -> str:
    """Distribution names compare case-insensitively with -, _ and . alike (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _load_entry_points() -> None:
    allow = os.environ.get("ARCBENCH_LOAD_PLUGINS")
    allowed = None if allow is None else {_norm(s) for s in allow.split(",") if s.strip()}
    for ep, dist in _entry_points():
        dist_name = dist.metadata["Name"] or ""
        if allowed is not None and _norm(ep.name) not in allowed and _norm(dist_name) not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue  # the same distribution seen twice on sys.path
        try:
            mod = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the tool down silently
            raise ArcbenchError(f"plugin {ep.name!r} ({ep.value}) failed to import: "
                                f"{type(exc).__name__}: {exc}") from exc
        if pm.is_registered(mod):
            continue
        pm.register(mod, ep.name)
        _dist_of[ep.name] = (dist_name, dist.version or "")


def load_plugins() -> pluggy.PluginManager:
    """Register built-ins and installed entry points, once per process.

    Safe to call again after a failure: what already registered is skipped.
    """
    global _loaded
    if _loaded:
        return pm
    for modname in BUILTIN_PLUGINS:
        mod = importlib.import_module(modname)
        if not pm.is_registered(mod):
            pm.register(mod, modname)
    _load_entry_points()
    _loaded = True
    for modname in filter(None, os.environ.get(PLUGIN_MODULES_ENV, "").split(",")):
        load_plugin_module(modname)  # explicit --plugin modules of a parent process
    _changed()
    return pm


def reset() -> None:
    """Forget every registered plugin so the next call loads them afresh.

    For tests (and long-lived hosts) that install or remove plugins at run time.
    """
    global _loaded
    for plugin in list(pm.get_plugins()):
        pm.unregister(plugin)
    _loaded = False
    _dist_of.clear()
    _changed()
    importlib.invalidate_caches()  # importlib.metadata caches sys.path listings


def load_plugin_module(modname: str) -> None:
    """Register a plugin module named explicitly (``--plugin MODULE``)."""
    load_plugins()
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise ArcbenchError(f"--plugin {modname}: cannot import: {exc}") from exc
    if not pm.is_registered(mod):
        pm.register(mod, modname)
        _changed()
    # worker processes (elastic launch) inherit the environment and load it too
    names = [n for n in os.environ.get(PLUGIN_MODULES_ENV, "").split(",") if n]
    if modname not in names:
        os.environ[PLUGIN_MODULES_ENV] = ",".join(names + [modname])


def register_plugin(obj, name: Optional[str] = None) -> None:
    """Register a plugin object directly (tests and embedding applications).

    ``obj`` is a module, an instance, or a class; a class is instantiated
    without arguments so that its ``@hookimpl`` methods are bound.
    """
    load_plugins()
    if inspect.isclass(obj):
        obj = obj()
    if name is not None and pm.get_plugin(name) is not None:
        raise ArcbenchError(f"a plugin named {name!r} is already registered")
    try:
        pm.register(obj, name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise ArcbenchError(f"cannot register plugin {name or obj!r}: {exc}") from exc
    _changed()


def unregister_plugin(name: str) -> None:
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
        _changed()


def list_plugins() -> List[dict]:
    """One dict per plugin: name, hooks, version, builtin."""
    load_plugins()
    from . import __version__

    rows = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        builtin = name in BUILTIN_PLUGINS
        dist, version = _dist_of.get(name, ("arcbench", __version__) if builtin else ("", ""))
        version = version or str(getattr(plugin, "__version__", "") or "")
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "hooks": hooks, "version": version or None,
                     "distribution": dist or None, "builtin": builtin})
    rows.sort(key=lambda r: (not r["builtin"], r["name"]))
    return rows
