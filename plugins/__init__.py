"""The plugin manager, and the registries it fills.

Built-in plugins are plain modules registered through the same hooks as
third-party ones.  Third-party plugins come only from the ``arcbench``
entry-point group or from an explicit ``--plugin MODULE``; nothing is
imported from the working directory by accident.

``ARCBENCH_LOAD_PLUGINS`` (comma separated entry-point or distribution
names) restricts which installed third-party plugins load; set it to an
empty string to load none.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import pluggy

from arcbench import hookspecs
from arcbench.errors import ArcbenchError, UnknownNameError

ENTRY_POINT_GROUP = "arcbench"

BUILTIN_PLUGINS = (
    "arcbench.plugins.devices.cpu",
    "arcbench.plugins.devices.cuda",
    "arcbench.plugins.devices.sdaa",
    "arcbench.plugins.backbones.mobilefacenet",
    "arcbench.plugins.backbones.mobilenetv1",
    "arcbench.plugins.backbones.iresnet",
    "arcbench.plugins.heads.margins",
)

pm = pluggy.PluginManager("arcbench")
pm.add_hookspecs(hookspecs)

_loaded = False
_dist_of: Dict[str, Tuple[str, str]] = {}  # plugin name -> (distribution, version)


def _entry_points():
    from importlib import metadata

    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))  # Python 3.9


def load_plugins() -> pluggy.PluginManager:
    """Register built-ins and installed entry points, once per process."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for modname in BUILTIN_PLUGINS:
        mod = importlib.import_module(modname)
        if not pm.is_registered(mod):
            pm.register(mod, modname)
    allow = os.environ.get("ARCBENCH_LOAD_PLUGINS")
    allowed = None if allow is None else {s.strip() for s in allow.split(",") if s.strip()}
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else ""
        if allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            mod = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the tool down silently
            raise ArcbenchError(f"plugin {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
        pm.register(mod, ep.name)
        _dist_of[ep.name] = (dist_name, dist.version if dist is not None else "")
    _invalidate()
    return pm


def load_plugin_module(modname: str) -> None:
    """Register a plugin module named explicitly (``--plugin MODULE``)."""
    load_plugins()
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise ArcbenchError(f"--plugin {modname}: cannot import: {exc}") from exc
    if not pm.is_registered(mod):
        pm.register(mod, modname)
        _invalidate()


def register_plugin(obj, name: Optional[str] = None) -> None:
    """Register a plugin object directly (tests and embedding applications)."""
    load_plugins()
    pm.register(obj, name)
    _invalidate()


def unregister_plugin(name: str) -> None:
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
        _invalidate()


def list_plugins() -> List[dict]:
    """One dict per plugin: name, hooks, version, builtin."""
    load_plugins()
    from arcbench import __version__

    rows = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        builtin = name in BUILTIN_PLUGINS
        dist, version = _dist_of.get(name, ("arcbench", __version__) if builtin else ("", ""))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "hooks": hooks, "version": version or None,
                     "distribution": dist or None, "builtin": builtin})
    rows.sort(key=lambda r: (not r["builtin"], r["name"]))
    return rows


# ----------------------------------------------------------------- registries

@dataclass(frozen=True)
class BackboneSpec:
    name: str
    factory: Callable
    embedding_size: int
    input_size: int = 112
    checkpoint_formats: Tuple[str, ...] = ()
    margin_scale: float = 64.0
    plugin: str = ""

    def create(self, **kwargs):
        return self.factory(**kwargs)


@dataclass(frozen=True)
class HeadSpec:
    name: str
    factory: Callable
    description: str = ""
    plugin: str = ""

    def create(self, in_features: int, num_classes: int, **kwargs):
        return self.factory(in_features, num_classes, **kwargs)


_cache: Dict[str, dict] = {}


def _invalidate() -> None:
    _cache.clear()


def _collect(hook_name: str, make: Callable) -> dict:
    if hook_name in _cache:
        return _cache[hook_name]
    load_plugins()
    found: dict = {}
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(*args, _plugin=plugin_name, **kwargs):
            item = make(_plugin, *args, **kwargs)
            found[item.name] = item

        impl.function(register=register)
    _cache[hook_name] = found
    return found


def _make_device(plugin, device):
    if not getattr(device, "name", None):
        raise ArcbenchError(f"plugin {plugin!r} registered a device without a name")
    device.plugin = plugin
    return device


def devices() -> Dict[str, "object"]:
    """All registered devices by name, available or not."""
    return _collect("register_devices", _make_device)


def backbones() -> Dict[str, BackboneSpec]:
    return _collect("register_backbones",
                    lambda plugin, name, factory, **kw: BackboneSpec(
                        name, factory, plugin=plugin,
                        **{**kw, "checkpoint_formats": tuple(kw.get("checkpoint_formats", ()))}))


def heads() -> Dict[str, HeadSpec]:
    return _collect("register_heads",
                    lambda plugin, name, factory, **kw: HeadSpec(name, factory, plugin=plugin, **kw))


AUTO_ORDER = ("sdaa", "cuda", "cpu")


def get_device(name: str = "auto"):
    """A registered device by name; ``auto`` picks sdaa, then cuda, then cpu."""
    registry = devices()
    if name == "auto":
        for candidate in AUTO_ORDER:
            dev = registry.get(candidate)
            if dev is not None and dev.is_available()[0]:
                return dev
        raise ArcbenchError("no device is available (tried " + ", ".join(AUTO_ORDER) + ")")
    if name not in registry:
        raise UnknownNameError("device", name, list(registry) + ["auto"])
    return registry[name]


def require_device(name: str = "auto"):
    """Like :func:`get_device`, but an unavailable device is an error."""
    dev = get_device(name)
    ok, reason = dev.is_available()
    if not ok:
        raise ArcbenchError(f"device {dev.name!r} is unavailable: {reason}")
    return dev


def get_backbone(name: str) -> BackboneSpec:
    registry = backbones()
    if name not in registry:
        raise UnknownNameError("backbone", name, registry)
    return registry[name]


def create_backbone(name: str, **kwargs):
    return get_backbone(name).create(**kwargs)


def get_head(name: str) -> HeadSpec:
    registry = heads()
    if name not in registry:
        raise UnknownNameError("head", name, registry)
    return registry[name]


def create_head(name: str, in_features: int, num_classes: int, **kwargs):
    return get_head(name).create(in_features, num_classes, **kwargs)
