"""Helpers for methods that keep a slowly moving copy of a network (EMA teachers, momentum key encoders).

A method makes the copy once with :func:`frozen_copy` and keeps it as an attribute (so
:meth:`nlbench.Method.state_dict` saves it, and its ``deployable_state`` leaves it out); each step it
calls :func:`ema_update` and, where the copy should normalise like the source, :func:`copy_buffers`::

    self.teacher = frozen_copy(self.net)
    ...
    ema_update(self.teacher, self.net, 0.999)     # t <- 0.999 t + 0.001 s, parameter by parameter
    copy_buffers(self.teacher, self.net)          # BatchNorm statistics taken over as they are

Parameters and buffers are matched by name, and the target may hold a subset of the source's (a
copy whose classifier was removed): every name of the target must exist in the source.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["copy_buffers", "ema_update", "frozen_copy"]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (an EMA target starts equal to its source)."""
    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    return clone


def _pairs(target: dict[str, Tensor], source: dict[str, Tensor], what: str) -> tuple[list[Tensor], list[Tensor]]:
    """The target's tensors and the source's tensors of the same names, in the target's order."""
    missing = [name for name in target if name not in source]
    if missing:
        raise ValueError(f"the source network has no {what} named {', '.join(missing[:5])}")
    return list(target.values()), [source[name] for name in target]


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """Move every parameter of ``target`` towards ``source``'s: t <- m t + (1 - m) s, without gradient."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
    targets, sources = _pairs(dict(target.named_parameters()), dict(source.named_parameters()), "parameter")
    if targets:
        # lerp(t, s, w) = t + w (s - t) = (1 - w) t + w s, with w = 1 - m: one fused kernel per dtype.
        torch._foreach_lerp_(targets, [s.detach() for s in sources], 1.0 - momentum)


@torch.no_grad()
def copy_buffers(target: nn.Module, source: nn.Module) -> None:
    """Copy every buffer of ``target`` (BatchNorm running statistics, counters) from ``source``."""
    targets, sources = _pairs(dict(target.named_buffers()), dict(source.named_buffers()), "buffer")
    for t, s in zip(targets, sources, strict=True):
        t.copy_(s)
