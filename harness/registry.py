"""What the plugins registered: devices, backbones and heads by name (timm's ``list``/``create``).

Each registry runs its hook over every loaded plugin (see
:mod:`arcbench.plugin_manager`) and remembers who registered what; later
registrations of a name replace earlier ones, so a third-party plugin can
override a built-in on purpose.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from . import plugin_manager
from .errors import ArcbenchError, UnknownNameError


#: the image side a backbone takes unless its plugin registers another ``input_size``
DEFAULT_INPUT_SIZE = 112


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.  ``input_size``: the square image side everything that feeds it
    uses (training data, evaluation, bench, FLOP counts).  ``fold_bn``: its conv->BatchNorm
    pairs may be folded into the convs for inference (a plain graph with no Python state in
    ``forward``; see :func:`arcbench.inference.weights.inference_model`)."""

    name: str
    factory: Callable
    embedding_size: int
    input_size: int = DEFAULT_INPUT_SIZE
    margin_scale: float = 64.0
    fold_bn: bool = False
    plugin: str = ""

    def create(self, **kwargs):
        return self.factory(**kwargs)


@dataclass(frozen=True)
class HeadSpec:
    """A registered margin head.  ``params``: the keyword arguments of its factory that the
    command line may set (see :data:`HEAD_FLAGS` and :func:`head_kwargs`).  ``plan``: its memory
    and FLOPs plan before it is built (:class:`arcbench.head.HeadPlan`; None: planned as a full
    replicated matrix).  The module's own hooks are described in :mod:`arcbench.head`."""

    name: str
    factory: Callable
    description: str = ""
    params: Tuple[str, ...] = ()
    plugin: str = ""
    plan: Optional[Callable] = None

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


def _make_backbone(plugin, name, factory, **kw):
    if "checkpoint_formats" in kw:  # an early contract had it; every loader reads every layout by key
        kw.pop("checkpoint_formats")
        warnings.warn(f"plugin {plugin!r}: backbone {name!r}: checkpoint_formats is no longer used "
                      "(weights load by matching keys); drop it", DeprecationWarning, stacklevel=3)
    return BackboneSpec(name, factory, plugin=plugin, **kw)


def backbones() -> Dict[str, BackboneSpec]:
    """All registered backbones by name."""
    return _collect("register_backbones", _make_backbone)


def _factory_params(factory: Callable) -> Tuple[str, ...]:
    """The keyword parameters of a head factory after its two positional ones
    (``in_features``, ``num_classes``), for plugins that do not list ``params``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return ()
    named = [p for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return tuple(p.name for p in named[2:] if p.kind != p.POSITIONAL_ONLY)


def _make_head(plugin, name, factory, params=None, **kw):
    params = _factory_params(factory) if params is None else tuple(params)
    return HeadSpec(name, factory, params=params, plugin=plugin, **kw)


def heads() -> Dict[str, HeadSpec]:
    """All registered margin heads by name."""
    return _collect("register_heads", _make_head)


def auto_order() -> List[object]:
    """Every registered device, most preferred by ``--device auto`` first (``auto_priority``,
    ties in registration order)."""
    return sorted(devices().values(), key=lambda dev: -getattr(dev, "auto_priority", 0))


def names(kind: str) -> List[str]:
    """Registered names of ``kind`` (device, backbone or head), for help texts; devices in
    ``--device auto``'s order."""
    if kind == "device":
        return [dev.name for dev in auto_order()]
    return list({"backbone": backbones, "head": heads}[kind]())


def get_device(name: str = "auto"):
    """A registered device by name; ``auto`` picks the available one with the highest ``auto_priority``."""
    if name == "auto":
        ranked = auto_order()
        for dev in ranked:
            if dev.is_available()[0]:
                return dev
        raise ArcbenchError("no device is available (tried " + ", ".join(d.name for d in ranked) + ")")
    registry = devices()
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


#: head factory keyword -> the ``arcbench run`` flag that sets it
HEAD_FLAGS = {"s": "--margin-s", "m": "--margin-m", "sample_rate": "--sample-rate", "margin": "--margin",
              "seed": "--seed"}
#: settings of the whole run: a head that takes one gets it, a head that does not is no error
RUN_WIDE = ("seed",)
#: values that ask for nothing beyond what every head does (r = 1: every class centre is used)
NEUTRAL = {"sample_rate": 1.0}


def heads_taking(param: str) -> List[str]:
    """Names of the registered heads whose factories take ``param``."""
    return [n for n, spec in heads().items() if param in spec.params]


def head_kwargs(name: str, given: dict, defaults: Optional[dict] = None) -> dict:
    """The keyword arguments for head ``name`` from command-line values.

    ``given`` maps :data:`HEAD_FLAGS` keys to values, None = not given.  A value the head's
    spec does not list in ``params`` is an error naming its flag (never silently dropped),
    except run-wide settings (:data:`RUN_WIDE`) and :data:`NEUTRAL` values.  ``defaults``
    fill what the head takes but was not given (e.g. ``s`` from the backbone's margin scale).
    """
    spec = get_head(name)
    out = {k: v for k, v in (defaults or {}).items() if k in spec.params and v is not None}
    for key, value in given.items():
        if value is None:
            continue
        if key in spec.params:
            out[key] = value
        elif key not in RUN_WIDE and NEUTRAL.get(key, object()) != value:
            raise ArcbenchError(_not_taken(spec, key))
    return out


def _not_taken(spec: HeadSpec, key: str) -> str:
    """'--sample-rate and --margin apply to --head partial_fc, not to --head arcface (...)':
    the flag, with every flag that the same heads (and not this one) take."""
    takers = heads_taking(key)
    group = [key] + [k for k in HEAD_FLAGS if k not in (key, *RUN_WIDE, *spec.params) and heads_taking(k) == takers]
    flags = " and ".join(HEAD_FLAGS.get(k, k) for k in group)
    where = "--head " + _or(takers) if takers else "no registered head"
    about = f" ({spec.description})" if spec.description else ""
    return f"{flags} appl{'ies' if len(group) == 1 else 'y'} to {where}, not to --head {spec.name}{about}"


def _or(items: List[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
