"""The arcbench plugin contract.

Every hook receives a ``register`` callback and calls it once per object it
provides; built-in plugins use exactly the same hooks as third-party ones.
Third-party distributions expose a module in the ``arcbench`` entry-point
group::

    [project.entry-points.arcbench]
    my_device = "my_package.arcbench_plugin"

and decorate functions in it with :data:`arcbench.hookimpl`.
"""
from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("arcbench")
hookimpl = pluggy.HookimplMarker("arcbench")


@hookspec
def register_devices(register: Callable) -> None:
    """Register :class:`arcbench.device.Device` instances.

    Call ``register(device)`` for each device.  A device whose runtime is
    missing must still be registered; it reports that through
    ``is_available()`` instead of failing at import.  Its ``auto_priority``
    (int, default 0) ranks it for ``--device auto``: the available device
    with the highest value wins; the built-ins use cpu 10, cuda 20, sdaa 30.
    """


@hookspec
def register_backbones(register: Callable) -> None:
    """Register backbone factories.

    Call ``register(name, factory, embedding_size=..., input_size=112,
    margin_scale=64.0, fold_bn=False)``.  ``factory(**kwargs)`` returns an
    ``nn.Module`` mapping ``(N, 3, input_size, input_size)`` images in
    [-1, 1] to ``(N, embedding_size)`` embeddings (not normalised); arcbench
    feeds it images of that size everywhere (training, evaluation, bench,
    FLOP counts).  ``fold_bn=True`` lets evaluation embed with a copy whose
    conv->BatchNorm pairs are folded (only for a plain graph that keeps no
    Python state in ``forward``).
    """


@hookspec
def register_heads(register: Callable) -> None:
    """Register margin-head factories.

    Call ``register(name, factory, description=..., params=(...))``.
    ``factory(in_features, num_classes, **kwargs)`` returns an ``nn.Module``
    whose ``forward(embeddings, labels)`` gives scaled logits for
    cross-entropy.  ``params`` names the keyword arguments the command line
    may set (``s``, ``m``, ``margin``, ``sample_rate``, ``seed``); a flag for
    one the head does not list is refused.  Without ``params`` they are read
    from the factory's signature.
    """
