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

    Call ``register(name, factory, description=..., params=(...), plan=None)``.

    ``factory(in_features: int, num_classes: int, **kwargs) -> nn.Module``: the
    module's ``forward(embeddings, labels)`` gives scaled logits for
    cross-entropy.  ``params: tuple[str, ...]`` names the keyword arguments the
    command line may set (``s``, ``m``, ``margin``, ``sample_rate``, ``seed``);
    a flag for one the head does not list is refused.  Without ``params`` they
    are read from the factory's signature.

    ``plan(num_classes: int, dim: int, nproc: int, per_process_batch: int,
    sample_rate: float) -> arcbench.head.HeadPlan``: the head's memory per
    process and FLOPs per image, computed before anything is built (the bench
    skips a point that cannot fit); None plans a full ``[C, D]`` matrix
    replicated on every process.

    The module may implement optional hooks (all read by :mod:`arcbench.head`,
    which documents them; an ordinary head implements none):

    * ``computes_loss: bool`` (class attribute): ``forward`` returns the loss,
      not logits.
    * ``sharded: bool`` (class attribute): the parameters are split across the
      ranks; kept out of DDP.  A sharded head must implement
      ``full_state(optimizer) -> dict | None`` (a collective: its state
      independent of the world size, saved in training checkpoints),
      ``load_full_state(state, optimizer) -> None`` (re-shards it for this
      world size) and ``clip_grad_norm_(others, max_norm) -> Tensor`` (the
      global norm over ``others`` and its own shards).
    * ``state_params() -> Iterable[Parameter]``: the parameters whose
      optimiser state ``full_state`` carries (default: all of the head's).
    * ``state_bytes(optimizer) -> int``: what this rank holds for the head
      (default: parameters, gradients and optimiser state).
    """
