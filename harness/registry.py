"""What the plugins registered: devices, backbones and heads by name (timm's ``list``/``create``).

Each registry runs its hook over every loaded plugin (see
:mod:`arcbench.plugin_manager`) and remembers who registered what; later
registrations of a name replace earlier ones, so a third-party plugin can
override a built-in on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from . import plugin_manager
from .errors import ArcbenchError, UnknownNameError


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


_cache: Dict[str, Tuple[int, dict]] = {}  # hook name -> (plugin-manager generation, registry)


def _collect(hook_name: str, make: Callable) -> dict:
    """Run one registration hook over every plugin; ``make(plugin, *args, **kw)`` builds the entry."""
    pm = plugin_manager.load_plugins()
    cached = _cache.get(hook_name)
    if cached and cached[0] == plugin_manager.generation:
        return cached[1]
    found: dict = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        def register(*args, _plugin=impl.plugin_name, **kwargs):
            try:
                item = make(_plugin, *args, **kwargs)
            except TypeError as exc:
                raise ArcbenchError(f"plugin {_plugin!r}: bad {hook_name} registration: {exc}") from exc
            found[item.name] = item

        # pluggy lets an implementation declare fewer arguments than the spec.
        impl.function(**{arg: register for arg in impl.argnames})
    _cache[hook_name] = (plugin_manager.generation, found)
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
