"""Per-epoch schedules of the methods, as pure functions tested against docs/methods.md values."""

from __future__ import annotations

import math


def gaussian_rampup(epoch: float, ramp_epochs: float, maximum: float, beta: float, clip: bool) -> float:
    """maximum * exp(-beta * (1 - e/e_r)^2); with ``clip`` the value stays at ``maximum`` after e_r."""
    if ramp_epochs <= 0:
        return maximum
    progress = min(epoch, ramp_epochs) if clip else epoch
    return maximum * math.exp(-beta * (1.0 - progress / ramp_epochs) ** 2)


def cct_lambda(epoch: int, epochs: int, lambda_max: float = 0.9, beta: float = 0.65,
               ramp_fraction: float = 0.9, clip: bool = False) -> float:
    """CCT's consistency weight lambda(e) with e 0-based and e_r = ramp_fraction * epochs (code form).

    Unclipped by default, as in the official code: after e_r the Gaussian decreases slightly again.
    For 100 epochs: lambda(0)=0.470, lambda(25)=0.641, lambda(90)=0.900, lambda(99)=0.894.
    """
    return gaussian_rampup(epoch, ramp_fraction * epochs, lambda_max, beta, clip)
