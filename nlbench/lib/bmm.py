"""A two-component Beta mixture fitted by EM on [0, 1] values, and its 100-bin clean-posterior lookup table (ReSup).

The fit is the one of ReSup's official code (in the style of Arazo et al. 2019), written out in
float64 (docs/methods.md, ReSup):

* the values are clamped to [1e-4, 1 - 1e-4] (the Beta likelihood is unbounded at 0 and 1);
* start: (alpha, beta) = (1, 2) and (2, 1), weights (1/2, 1/2);
* ``iterations`` (10) rounds of an E-step, r_c(x) = pi_c Beta(x; alpha_c, beta_c) floored at
  1e-12 and normalised over c, and an M-step by weighted moments: xbar_c = sum r_c x / sum r_c,
  v_c = sum r_c (x - xbar_c)^2 / sum r_c, alpha_c = xbar_c (xbar_c (1 - xbar_c) / v_c - 1),
  beta_c = alpha_c (1 - xbar_c) / xbar_c, pi_c = mean r_c. No likelihood, no stopping rule.

The posterior of component c is pi_c f_c(x) / (sum_k pi_k f_k(x) + 1e-12) (the code's guard). The
lookup table holds that posterior at 100 points linspace(1e-12, 1 - 1e-12, 100), every entry from
the first maximum on replaced by the maximum (a non-decreasing tail), and a value s reads entry
min(99, floor(100 s)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: The clamp of the fitted values: the Beta likelihood is unbounded at 0 and 1.
FIT_EPS = 1e-4
#: Floor of the weighted likelihoods in the E-step and guard of the posterior's denominator (the code's).
EPS_NAN = 1e-12
#: Floor of a component's weighted variance. Never reached unless a component collapses onto one
#: value, where the moment fit divides by zero (the code) or gives alpha so large that the density's
#: log terms cancel catastrophically; at 1e-12 alpha stays below 2.5e11.
VAR_FLOOR = 1e-12
ITERATIONS = 10
BINS = 100
#: The official start: component 0 = Beta(1, 2) (mass near 0), component 1 = Beta(2, 1) (mass near 1).
ALPHAS_INIT = (1.0, 2.0)
BETAS_INIT = (2.0, 1.0)
WEIGHTS_INIT = (0.5, 0.5)
#: How the clean component is chosen: "mean" = the larger mean alpha / (alpha + beta); "index" = component 1.
CLEAN_RULES = ("mean", "index")


@dataclass
class BMMFit:
    """A fitted two-component Beta mixture (float64 tensors of 2 on the CPU)."""

    alphas: Tensor
    betas: Tensor
    weights: Tensor

    @property
    def means(self) -> Tensor:
        """The components' means alpha / (alpha + beta)."""
        return self.alphas / (self.alphas + self.betas)

    def clean_component(self, rule: str = "mean") -> int:
        """The index of the clean (high-similarity) component: the larger mean ("mean"; a tie keeps
        the code's component 1) or component 1 whatever it fitted ("index", the official code)."""
        if rule not in CLEAN_RULES:
            raise ValueError(f"unknown clean-component rule {rule!r}; choose one of {CLEAN_RULES}")
        if rule == "index":
            return 1
        means = self.means
        return 0 if bool(means[0] > means[1]) else 1

    def weighted_likelihoods(self, x: Tensor) -> Tensor:
        """2 x N: pi_c Beta(x; alpha_c, beta_c) of each component at the values ``x`` (float64)."""
        return self.weights[:, None] * torch.exp(beta_log_pdf(x[None, :], self.alphas[:, None], self.betas[:, None]))

    def posterior(self, x: Tensor, component: int) -> Tensor:
        """The posterior of ``component`` at the values ``x``, with the code's 1e-12 in the denominator."""
        x = x.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
        weighted = self.weighted_likelihoods(x)
        return weighted[component] / (weighted.sum(0) + EPS_NAN)


def beta_log_pdf(x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """log Beta(x; alpha, beta) = (alpha - 1) ln x + (beta - 1) ln(1 - x) - ln B(alpha, beta), for x in (0, 1)."""
    log_norm = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    return (alpha - 1) * torch.log(x) + (beta - 1) * torch.log1p(-x) - log_norm


def responsibilities(x: Tensor, fit: BMMFit) -> Tensor:
    """The E-step: 2 x N weighted likelihoods floored at 1e-12 (the code's), normalised over the components."""
    weighted = fit.weighted_likelihoods(x).clamp_min(EPS_NAN)
    return weighted / weighted.sum(0, keepdim=True)


def moment_fit(x: Tensor, resp: Tensor) -> tuple[Tensor, Tensor]:
    """The M-step of the Beta parameters: (alphas, betas) from the weighted mean and variance of each component."""
    total = resp.sum(1)
    mean = (resp * x[None, :]).sum(1) / total
    variance = (resp * (x[None, :] - mean[:, None]) ** 2).sum(1) / total
    variance = variance.clamp_min(VAR_FLOOR)
    alphas = mean * (mean * (1 - mean) / variance - 1)
    return alphas, alphas * (1 - mean) / mean


def fit_bmm(x: Tensor, *, iterations: int = ITERATIONS, alphas: Sequence[float] = ALPHAS_INIT,
            betas: Sequence[float] = BETAS_INIT, weights: Sequence[float] = WEIGHTS_INIT) -> BMMFit:
    """Fit the mixture to the values ``x`` (any shape, flattened; clamped to [1e-4, 1 - 1e-4]) by
    ``iterations`` EM rounds from the given start (the code's by default)."""
    x = x.detach().reshape(-1).to(device="cpu", dtype=torch.float64).clamp(FIT_EPS, 1 - FIT_EPS)
    if x.numel() < 2:
        raise ValueError("a two-component mixture needs at least two values")
    fit = BMMFit(torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64),
                 torch.tensor(weights, dtype=torch.float64))
    for _ in range(iterations):
        resp = responsibilities(x, fit)
        new_alphas, new_betas = moment_fit(x, resp)
        new_weights = resp.sum(1) / resp.sum()
        fit = BMMFit(new_alphas, new_betas, new_weights)
    return fit


def lookup_grid(bins: int = BINS) -> Tensor:
    """The table's points: linspace(1e-12, 1 - 1e-12, bins) in float64."""
    return torch.linspace(EPS_NAN, 1 - EPS_NAN, bins, dtype=torch.float64)


def lookup_table(fit: BMMFit, component: int, bins: int = BINS) -> Tensor:
    """The posterior of ``component`` on :func:`lookup_grid`, made non-decreasing after its maximum:
    every entry from the first maximum on is the maximum (float64, on the CPU)."""
    table = fit.posterior(lookup_grid(bins), component)
    top = int(torch.argmax(table))
    table[top:] = float(table[top])
    return table


def lookup_bins(s: Tensor, bins: int = BINS) -> Tensor:
    """The table entry of each value: floor(bins * s) (computed in ``s``'s float dtype, as the code's
    float32), clipped to [0, bins - 1]."""
    return torch.floor(s * bins).long().clamp(0, bins - 1)


def look_up(table: Tensor, s: Tensor) -> Tensor:
    """The table's value for each of the values ``s`` (on ``table``'s device)."""
    return table[lookup_bins(s, table.numel()).to(table.device)]
