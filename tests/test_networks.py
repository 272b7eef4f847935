"""The EMA helpers of nlbench.networks: frozen copies, parameter EMA and buffer copies (design D.4 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nlbench.networks import copy_buffers, ema_update, frozen_copy


def small() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_ema_of_a_unit_key_towards_a_zero_query_is_the_momentum() -> None:
    key, query = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        key.weight.fill_(1.0)
        query.weight.fill_(0.0)
    ema_update(key, query, 0.999)
    assert key.weight.item() == pytest.approx(0.999, abs=1e-7)
    ema_update(key, query, 1.0)  # momentum 1: the key stays
    assert key.weight.item() == pytest.approx(0.999, abs=1e-7)
    ema_update(key, query, 0.0)  # momentum 0: the key becomes the query
    assert key.weight.item() == 0.0


def test_ema_is_elementwise_m_t_plus_one_minus_m_s_and_leaves_the_source() -> None:
    torch.manual_seed(0)
    target, source = small(), small()
    before = {k: v.clone() for k, v in target.named_parameters()}
    source_before = {k: v.clone() for k, v in source.named_parameters()}
    ema_update(target, source, 0.9)
    for name, value in target.named_parameters():
        assert torch.allclose(value, 0.9 * before[name] + 0.1 * source_before[name], atol=1e-7)
    for name, value in source.named_parameters():
        assert torch.equal(value, source_before[name])


def test_buffers_equal_the_source_after_the_copy() -> None:
    target, source = small(), small()
    source.train()
    source(torch.randn(8, 3))  # moves the source's running statistics and counter
    copy_buffers(target, source)
    for (name, mine), (_, theirs) in zip(target.named_buffers(), source.named_buffers(), strict=True):
        assert torch.equal(mine, theirs), name


def test_a_target_may_hold_a_subset_of_the_source_by_name_but_not_a_foreign_name() -> None:
    source = small()
    target = frozen_copy(source)
    target[2] = nn.Identity()  # a copy without its classifier
    with torch.no_grad():
        target[0].weight.zero_()
    ema_update(target, source, 0.5)
    assert torch.allclose(target[0].weight, 0.5 * source[0].weight)
    with pytest.raises(ValueError, match="no parameter named extra.weight"):
        ema_update(nn.ModuleDict({"extra": nn.Linear(1, 1)}), source, 0.5)


def test_frozen_copy_is_independent_and_takes_no_gradient() -> None:
    source = small()
    copy = frozen_copy(source)
    assert all(not p.requires_grad for p in copy.parameters())
    assert all(p.requires_grad for p in source.parameters())
    with torch.no_grad():
        copy[0].weight.add_(1.0)
    assert not torch.equal(copy[0].weight, source[0].weight)


def test_frozen_copy_of_a_compiled_module_computes_with_its_own_weights() -> None:
    source = nn.Linear(3, 2)
    source.compile(backend="eager")
    copy = frozen_copy(source)
    with torch.no_grad():
        copy.weight.zero_()
        copy.bias.zero_()
        x = torch.ones(1, 3)
        assert torch.equal(copy(x), torch.zeros(1, 2))
        assert not torch.equal(source(x), torch.zeros(1, 2))


def test_a_momentum_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="momentum"):
        ema_update(small(), small(), 1.5)
