"""`arcbench plugins`, `arcbench devices`, `arcbench backbones`, `arcbench heads`."""
from __future__ import annotations

import json
import os

import click

from .output import echo_json, echo_table
from .. import plugin_manager, registry


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_cmd(as_json):
    """List loaded plugins: name, hooks, version, built in or not."""
    rows = plugin_manager.list_plugins()
    if as_json:
        echo_json(rows)
    else:
        echo_table([{**r, "hooks": ",".join(r["hooks"])} for r in rows],
                   ["name", "builtin", "version", "distribution", "hooks"], tail=("name",))


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices_cmd(as_json):
    """List devices with availability, collective backend and AMP dtype.

    `--device auto` picks the available device with the highest auto_priority
    (sdaa, then cuda, then cpu among the built-ins).
    """
    rows = [dev.info() for dev in registry.devices().values()]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["name", "available", "dist_backend", "amp_dtype", "device_name", "reason"])


def _measure(spec, with_flops: bool):
    """``(params, flops)`` of one backbone.

    Built on the meta device first: no memory is allocated and no arithmetic
    done, so listing iresnet200 is quick.  A backbone that cannot run on meta
    (data-dependent code) is measured on the CPU instead.
    """
    import torch

    from ..bench.flops import forward_flops

    def measure(model, device):
        params = sum(p.numel() for p in model.parameters())
        return params, (forward_flops(model, spec.input_size, device=device) if with_flops else None)

    try:
        with torch.device("meta"):
            model = spec.create()
        return measure(model, "meta")
    except Exception:  # noqa: BLE001  (any meta failure: fall back to real tensors)
        return measure(spec.create(), None)


def _natural(name: str):
    """Sort key that puts iresnet18 before iresnet100."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _cache_key(name: str, spec) -> str:
    """What a backbone's size depends on: its plugin's code, its input size, arcbench and torch."""
    import sys

    import torch

    from .. import __version__

    mod = sys.modules.get(spec.plugin)
    try:
        stamp = os.path.getmtime(mod.__file__) if mod is not None and getattr(mod, "__file__", None) else None
    except OSError:
        stamp = None
    return f"{name}|{spec.plugin}|{stamp}|{spec.input_size}|{__version__}|{torch.__version__}"


def _measure_cached(name: str, spec, with_flops: bool):
    """:func:`_measure`, remembered in the cache folder: building seven backbones (even on the meta
    device) and counting their FLOPs takes seconds, and the figures only change with the code."""
    from ..data.synth import cache_root

    path = os.path.join(cache_root(), "backbone-sizes.json")
    try:
        with open(path, encoding="utf-8") as fh:
            known = json.load(fh)
    except (OSError, ValueError):
        known = {}
    key = _cache_key(name, spec)
    hit = known.get(key) if isinstance(known, dict) else None
    if isinstance(hit, list) and len(hit) == 2 and (hit[1] is not None or not with_flops):
        return hit[0], hit[1]
    params, flops = _measure(spec, with_flops)
    if flops is not None or not isinstance(hit, list):
        known = known if isinstance(known, dict) else {}
        known[key] = [params, flops]
        try:
            from ..record import atomic

            atomic.write_json(path, known)
        except OSError:  # a read-only home: measure again next time
            pass
    return params, flops


def backbone_rows(names=None, with_flops=True):
    rows = []
    for name, spec in sorted(registry.backbones().items(), key=lambda kv: _natural(kv[0])):
        if names and name not in names:
            continue
        params, flops = _measure_cached(name, spec, with_flops)
        rows.append({"name": name, "embedding_size": spec.embedding_size, "input_size": spec.input_size,
                     "params": params, "gflops": None if flops is None else round(flops / 1e9, 3),
                     "margin_scale": spec.margin_scale, "plugin": spec.plugin})
    return rows


@click.command("backbones")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--no-flops", is_flag=True, help="Skip FLOP counting (faster).")
@click.argument("names", nargs=-1)
def backbones_cmd(as_json, no_flops, names):
    """List backbones: embedding size, input size, parameter count, GFLOPs per image (at its input size)."""
    from ..errors import UnknownNameError

    known = registry.backbones()
    for n in names:
        if n not in known:
            raise UnknownNameError("backbone", n, known)
    rows = backbone_rows(set(names), with_flops=not no_flops)
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows)


@click.command("heads")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def heads_cmd(as_json):
    """List margin heads."""
    rows = [{"name": n, "description": s.description, "plugin": s.plugin}
            for n, s in sorted(registry.heads().items())]
    echo_json(rows) if as_json else echo_table(rows)
