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
import inspect
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import pluggy

from arcbench import hookspecs
from arcbench.errors import ArcbenchError, UnknownNameError

# Importing a subpackage binds it as an attribute of this package, which would
# replace the registry functions ``devices()``, ``backbones()`` and ``heads()``
# defined below with modules.  Import the subpackages first so the function
# definitions come last and win; later imports of their modules do not rebind.
from . import backbones as _backbones_pkg, devices as _devices_pkg, heads as _heads_pkg  # noqa: E402,F401

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
    import re

    return re.sub(r"[-_.]+", "-", name.strip()).lower()


#: explicit ``--plugin`` modules, passed on to worker processes
PLUGIN_MODULES_ENV = "ARCBENCH_PLUGIN_MODULES"


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
    _loaded = True
    for modname in filter(None, os.environ.get(PLUGIN_MODULES_ENV, "").split(",")):
        load_plugin_module(modname)  # explicit --plugin modules of a parent process
    _invalidate()
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
    _invalidate()
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
        _invalidate()
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
        version = version or str(getattr(plugin, "__version__", "") or "")
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
    """Run one registration hook over every plugin, remembering who registered what.

    Later registrations of a name replace earlier ones, so a third-party plugin
    (loaded after the built-ins) can override a built-in on purpose.
    """
    if hook_name in _cache:
        return _cache[hook_name]
    load_plugins()
    found: dict = {}
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(*args, _plugin=plugin_name, **kwargs):
            try:
                item = make(_plugin, *args, **kwargs)
            except TypeError as exc:
                raise ArcbenchError(f"plugin {_plugin!r}: bad {hook_name} registration: {exc}") from exc
            found[item.name] = item

        # pluggy lets an implementation declare fewer arguments than the spec.
        impl.function(**{arg: register for arg in impl.argnames})
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
    """All registered backbones by name."""
    return _collect("register_backbones",
                    lambda plugin, name, factory, **kw: BackboneSpec(
                        name, factory, plugin=plugin,
                        **{**kw, "checkpoint_formats": tuple(kw.get("checkpoint_formats", ()))}))


def heads() -> Dict[str, HeadSpec]:
    """All registered margin heads by name."""
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
        reason = reason[len("unavailable: "):] if reason.startswith("unavailable: ") else reason
        raise ArcbenchError(f"device {dev.name!r} is unavailable: {reason or 'no reason given'}")
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
