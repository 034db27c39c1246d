"""The head contract (arcbench.head): an ordinary head's defaults, and what a sharded head must bring.

Partial FC's hooks are tested in tests/unit/plugins/test_partial_fc.py and through runs in
tests/multiprocess/test_partial_fc_run.py; a third-party sharded head in
tests/multiprocess/test_sharded_head.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from arcbench import head as contract
from arcbench import hookimpl, plugin_manager, registry
from arcbench.config import RunConfig
from arcbench.errors import ArcbenchError
from arcbench.plugins.heads import partial_fc_plan


def _model_with_grads():
    torch.manual_seed(0)
    backbone, head = nn.Linear(4, 3), registry.create_head("arcface", 3, 5)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 10
    return model, head


def test_an_ordinary_head_gets_the_defaults():
    model, head = _model_with_grads()
    assert not contract.computes_loss(head) and not contract.is_sharded(head)
    assert contract.missing_hooks(head) == []
    assert contract.state_params(head) == [head.weight]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.step()  # momentum buffers: parameters, gradients and momentum count
    assert contract.state_bytes(head, opt) == 3 * 5 * 3 * 4
    assert contract.optimizer_indices(opt, [head.weight]) == {2}  # after the backbone's weight and bias

    want = copy.deepcopy(model)
    for p, q in zip(model.parameters(), want.parameters()):
        q.grad = p.grad.clone()
    want_total = nn.utils.clip_grad_norm_(want.parameters(), 1.0)
    total = contract.clip_grad_norm_(model, head, 1.0)
    assert torch.equal(total, want_total)
    for p, q in zip(model.parameters(), want.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_optimizer_indices_count_over_every_group():
    a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    opt = torch.optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1)
    assert contract.optimizer_indices(opt, [c, a]) == {0, 2}


def test_a_head_with_its_own_clipping_hook_gets_the_rest_of_the_model():
    model, head = _model_with_grads()
    seen = []
    head.clip_grad_norm_ = lambda others, max_norm: seen.append((list(others), max_norm)) or torch.tensor(0.0)
    contract.clip_grad_norm_(model, head, 0.5)
    (others, max_norm), = seen
    assert [id(p) for p in others] == [id(p) for p in model["backbone"].parameters()] and max_norm == 0.5


def test_the_full_head_plan_is_the_replicated_matrix():
    """An ordinary head is planned as Partial FC at one process without sampling was before
    the plans were registered: the bench's figures for --head arcface do not change."""
    c, d, batch = 2_000_000, 512, 64
    got = contract.full_head_plan(c, d, nproc=8, per_process_batch=batch, sample_rate=0.1)
    assert got.state_bytes == partial_fc_plan.head_memory_bytes(c, d, 1, grad=True)
    assert got.step_bytes == partial_fc_plan.head_step_bytes(c, d, 1, batch, 1.0)
    assert got.flops_per_image == 2 * d * c
    assert got.summary == partial_fc_plan.head_memory_message(c, d, 1)
    assert contract.plan(registry.get_head("arcface"), c, d, 8, batch, 0.1) == got
    pfc = contract.plan(registry.get_head("partial_fc"), c, d, 8, batch, 0.1)
    assert pfc.state_bytes == 3 * 250_000 * d * 4 and pfc.summary.startswith("2,000,000 classes x 512 dims over 8")


class _HalfSharded(nn.Module):
    """Says it is sharded but brings only one of the hooks that needs."""

    sharded = True

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_classes, in_features))

    def full_state(self, optimizer=None):
        return {}


class _Plugin:
    @hookimpl
    def register_heads(self, register):
        register("half_sharded", _HalfSharded, params=())


def test_a_sharded_head_without_its_hooks_is_refused_before_training():
    from arcbench.train.model import build_face_model

    plugin_manager.register_plugin(_Plugin(), "half-sharded")
    try:
        with pytest.raises(ArcbenchError, match="does not implement load_full_state, clip_grad_norm_"):
            build_face_model(RunConfig(backbone="mobilefacenet", head="half_sharded"), 10)
    finally:
        plugin_manager.unregister_plugin("half-sharded")
