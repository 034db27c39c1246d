"""Margin heads against their closed-form definitions, computed independently in float64."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arcbench import registry

N, D, C = 12, 16, 10


@pytest.fixture()
def batch():
    """Random embeddings; the first four point almost opposite their class centre (theta near pi)."""
    g = torch.Generator().manual_seed(0)
    head = registry.create_head("arcface", D, C)
    with torch.no_grad():
        head.weight.copy_(torch.randn(C, D, generator=g))
    labels = torch.randint(0, C, (N,), generator=g)
    emb = torch.randn(N, D, generator=g)
    emb[:4] = -head.weight.detach()[labels[:4]] * 3 + 0.05 * torch.randn(4, D, generator=g)
    return emb, labels, head.weight.detach().clone()


def _cos64(emb, weight):
    return F.normalize(emb.double()) @ F.normalize(weight.double()).t()


def _expected(emb, labels, weight, s, target_fn):
    cos = _cos64(emb, weight)
    out = cos.clone()
    for i, y in enumerate(labels.tolist()):
        out[i, y] = target_fn(cos[i, y].item())
    return out * s


def _make(name, weight, **kwargs):
    head = registry.create_head(name, D, C, **kwargs)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


def _arcface_target(m, easy=False):
    def fn(c):
        theta = math.acos(c)
        if easy:
            return math.cos(theta + m) if c > 0 else c
        if theta + m <= math.pi:  # i.e. cos(theta) > cos(pi - m)
            return math.cos(theta + m)
        return c - math.sin(math.pi - m) * m  # keeps the target logit decreasing in theta
    return fn


def test_arcface_matches_closed_form_on_both_branches(batch):
    emb, labels, weight = batch
    m, s = 0.5, 64.0
    target = _cos64(emb, weight).gather(1, labels.view(-1, 1)).squeeze(1)
    fallback = torch.acos(target) + m > math.pi
    assert fallback.any() and (~fallback).any()  # both branches are exercised
    out = _make("arcface", weight, s=s, m=m)(emb, labels)
    assert out.dtype == torch.float32 and out.shape == (N, C)
    torch.testing.assert_close(out.double(), _expected(emb, labels, weight, s, _arcface_target(m)),
                               rtol=0, atol=2e-4)


def test_arcface_easy_margin(batch):
    emb, labels, weight = batch
    out = _make("arcface", weight, s=30.0, m=0.3, easy_margin=True)(emb, labels)
    torch.testing.assert_close(out.double(), _expected(emb, labels, weight, 30.0, _arcface_target(0.3, easy=True)),
                               rtol=0, atol=2e-4)


def test_cosface_matches_closed_form(batch):
    emb, labels, weight = batch
    out = _make("cosface", weight, s=64.0, m=0.35)(emb, labels)
    torch.testing.assert_close(out.double(), _expected(emb, labels, weight, 64.0, lambda c: c - 0.35),
                               rtol=0, atol=2e-4)


def test_combined_matches_closed_form(batch):
    emb, labels, weight = batch
    m1, m2, m3 = 0.9, 0.4, 0.15
    out = _make("combined", weight, s=32.0, m1=m1, m2=m2, m3=m3)(emb, labels)
    exp = _expected(emb, labels, weight, 32.0, lambda c: math.cos(m1 * math.acos(c) + m2) - m3)
    torch.testing.assert_close(out.double(), exp, rtol=0, atol=2e-4)


def test_combined_with_arcface_settings_equals_arcface_away_from_the_fallback(batch):
    emb, labels, weight = batch
    emb, labels = emb[4:], labels[4:]  # theta + m < pi for these rows
    arc = _make("arcface", weight, m=0.5)(emb, labels)
    comb = _make("combined", weight, m1=1.0, m2=0.5, m3=0.0)(emb, labels)
    torch.testing.assert_close(comb, arc, rtol=0, atol=1e-3)


def test_the_margin_lowers_only_the_target_logit(batch):
    emb, labels, weight = batch
    plain = _cos64(emb, weight).float() * 64.0
    out = _make("arcface", weight)(emb, labels)
    mask = F.one_hot(labels, C).bool()
    torch.testing.assert_close(out[~mask], plain[~mask], rtol=0, atol=1e-4)
    assert (out[mask] < plain[mask]).all()


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined"])
def test_gradients_reach_embeddings_and_class_weights(batch, name):
    emb, labels, weight = batch
    head = _make(name, weight)
    emb = emb.clone().requires_grad_(True)
    F.cross_entropy(head(emb, labels), labels).backward()
    for grad in (emb.grad, head.weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the rows of classes nobody in the batch belongs to still get pushed away
    assert head.weight.grad.abs().sum(1).gt(0).all()


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined"])
def test_gradients_stay_finite_when_an_embedding_sits_on_its_centre(batch, name):
    _, labels, weight = batch
    emb = weight[labels].clone().requires_grad_(True)  # cos(theta) == 1 exactly
    head = _make(name, weight)
    F.cross_entropy(head(emb, labels), labels).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined"])
def test_margin_is_computed_in_float32_under_bf16_autocast(batch, name):
    emb, labels, weight = batch
    head = _make(name, weight)
    ref = head(emb, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(emb.bfloat16(), labels)
        out32 = head(emb, labels)
    assert out.dtype == torch.float32 and out32.dtype == torch.float32
    # the cosine matmul runs in bf16 under autocast (as insightface's head): its rounding, ~3
    # significant digits of a cosine times s, and no more - the margin maths stays fp32
    assert not torch.equal(out32, ref)
    other = ~F.one_hot(labels, C).bool()
    for got in (out32, out):
        torch.testing.assert_close(got[other], ref[other], rtol=0, atol=0.05 * 64 / 8)
        # a target logit goes through the margin: the combined margin's acos is steep near cos = -1
        # (this batch's first rows sit almost opposite their centres), so bf16 cosines move it by
        # up to ~4 % of s there; everywhere else as little as the other logits
        assert (got[~other] - ref[~other]).abs().max() <= 0.05 * 64


def test_heads_registry_and_kwargs():
    assert {"arcface", "cosface", "combined"} <= set(registry.heads())
    head = registry.create_head("arcface", 8, 4, s=32.0, m=0.3)
    assert (head.s, head.m, head.weight.shape) == (32.0, 0.3, (4, 8))
    assert "s=32.0" in repr(head)
    with pytest.raises(TypeError, match="margin"):
        registry.create_head("arcface", 8, 4, margin=0.5)
    with pytest.raises(TypeError, match="m1"):
        registry.create_head("cosface", 8, 4, m1=1.0)


# ------------------------------------------------------------------ what a head takes from the command line

def test_head_specs_list_the_parameters_the_command_line_sets():
    params = {n: registry.get_head(n).params for n in ("arcface", "cosface", "combined", "partial_fc")}
    assert params == {"arcface": ("s", "m"), "cosface": ("s", "m"), "combined": ("s",),
                      "partial_fc": ("s", "m", "margin", "sample_rate", "seed")}


RUN = {"s": None, "m": None, "margin": None, "sample_rate": 1.0, "seed": 7}  # nothing head-specific given


def test_head_kwargs_passes_what_the_head_takes_and_fills_defaults():
    assert registry.head_kwargs("arcface", {**RUN, "m": 0.3}, defaults={"s": 32.0}) == {"s": 32.0, "m": 0.3}
    assert registry.head_kwargs("cosface", {**RUN, "s": 20.0}, defaults={"s": 32.0}) == {"s": 20.0}
    assert registry.head_kwargs("combined", RUN, defaults={"s": 64.0}) == {"s": 64.0}  # the seed is run-wide
    got = registry.head_kwargs("partial_fc", {**RUN, "m": 0.3, "margin": "cosface", "sample_rate": 0.25})
    assert got == {"m": 0.3, "margin": "cosface", "sample_rate": 0.25, "seed": 7}
    head = registry.create_head("partial_fc", D, C, **got)
    assert (head.margin, head.m, head.sample_rate, head.seed) == ("cosface", 0.3, 0.25, 7)


@pytest.mark.parametrize("name, given, words", [
    ("combined", {"m": 0.3}, "--margin-m applies to --head arcface, cosface or partial_fc, not to --head combined"),
    ("arcface", {"sample_rate": 0.5}, "--sample-rate and --margin apply to --head partial_fc, not to --head arcface"),
    ("cosface", {"margin": "arcface"}, "--margin and --sample-rate apply to --head partial_fc"),
])
def test_head_kwargs_refuses_a_value_the_head_does_not_take_and_names_the_flag(name, given, words):
    from arcbench.errors import ArcbenchError

    with pytest.raises(ArcbenchError) as info:
        registry.head_kwargs(name, {**RUN, **given})
    assert words in str(info.value)


def test_a_head_registered_without_params_takes_its_factory_keywords(monkeypatch):
    from arcbench import hookimpl, plugin_manager

    class Scaled(torch.nn.Module):
        def __init__(self, dim, classes, s=10.0, *, temperature=1.0, **extra):
            super().__init__()

    class Plugin:
        @hookimpl
        def register_heads(self, register):
            register("scaled", Scaled, description="a test head")

    plugin_manager.register_plugin(Plugin(), "scaled-plugin")
    try:
        assert registry.get_head("scaled").params == ("s", "temperature")
        assert registry.head_kwargs("scaled", {**RUN, "s": 3.0}) == {"s": 3.0}
        assert "partial_fc" in registry.heads_taking("sample_rate")
    finally:
        plugin_manager.unregister_plugin("scaled-plugin")
