"""The Adam kernel on the CPU: fused by default, the same algorithm as torch's per-parameter loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from nlbench.options import is_runtime
from nlbench.settings import TrainSettings
from nlbench.testing import stub_context


def _net(seed: int = 0) -> nn.Module:
    # No conv bias before the BatchNorm (as in ResNet-18): its true gradient is zero, and Adam
    # turns the rounding noise of a zero gradient into full-size steps of either sign.
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))


def _context(fused: bool, weight_decay: float = 0.0):
    ctx = stub_context(num_classes=5)
    ctx.settings = dataclasses.replace(ctx.settings, fused_adam=fused, weight_decay=weight_decay)
    return ctx


@pytest.mark.parametrize("fused", [True, False])
def test_the_cpu_adam_kernel_follows_the_setting(fused):
    opt = _context(fused).optimizer([_net()])
    assert bool(opt.defaults["fused"]) is fused


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_fused_and_loop_adam_train_the_same_network(weight_decay):
    nets = {}
    for fused in (True, False):
        net = _net()
        opt = _context(fused, weight_decay).optimizer([net])
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            x = torch.randn(16, 3, 8, 8, generator=gen)
            y = torch.randint(0, 5, (16,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        nets[fused] = torch.cat([p.detach().flatten() for p in net.parameters()])
    start = torch.cat([p.detach().flatten() for p in _net().parameters()])
    moved = (nets[False] - start).abs().max()
    assert moved > 1e-2  # the networks did train
    assert torch.allclose(nets[True], nets[False], atol=1e-5, rtol=1e-4)


def test_the_kernel_choice_does_not_change_the_run_id():
    field = {f.name: f for f in dataclasses.fields(TrainSettings)}["fused_adam"]
    assert is_runtime(field) and TrainSettings().fused_adam is True
