"""A two-component 1-D Gaussian mixture fitted by EM, for loss-based sample division (DivideMix).

The EM is scikit-learn's ``GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)``
written out in float64 (the same parameter estimates, likelihood and stopping rule), with one
change: the initial partition is the exact optimal 2-means split of the sorted values instead of
k-means++ drawn from numpy's unseeded global generator, so a fit is a function of its input.

Fit, step by step (docs/methods.md, DivideMix):

* init: sort x; with prefix sums S1, S2 of the values and their squares, the split after k values
  has SSE(k) = (S2_k - S1_k^2 / k) + (S2_N - S2_k - (S1_N - S1_k)^2 / (N - k)); the first k of
  least SSE gives one-hot responsibilities;
* parameters from responsibilities r: n_c = sum_i r_ic + 10 eps, mu_c = sum r_ic x_i / n_c,
  v_c = sum r_ic (x_i - mu_c)^2 / n_c + reg_covar, pi_c = n_c / N (initial) or n_c / sum n_c;
* up to ``max_iter`` rounds of an E-step (mean log-likelihood L_t) and an M-step, stopping when
  |L_t - L_{t-1}| < tol;
* the posteriors are a last E-step with the last M-step's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: scikit-learn's 10 * machine epsilon of float64, added to every component's weight.
WEIGHT_EPS = 10 * torch.finfo(torch.float64).eps
REG_COVAR = 5e-4
MAX_ITER = 10
TOL = 1e-2
_LOG_2PI = math.log(2 * math.pi)


@dataclass
class GMMFit:
    """A fitted two-component mixture (float64 tensors on the CPU)."""

    weights: Tensor
    means: Tensor
    variances: Tensor
    #: N x 2 posteriors of the components (the final E-step).
    posteriors: Tensor
    #: Mean log-likelihood of every E-step of the loop, in order.
    log_likelihoods: list[float]
    converged: bool

    @property
    def clean_probability(self) -> Tensor:
        """The posterior of the component with the smaller mean (ties: the first)."""
        return self.posteriors[:, int(torch.argmin(self.means))]


def two_means_split(x: Tensor) -> int:
    """How many of the sorted values the optimal 1-D 2-means split puts in the lower cluster (first minimum)."""
    values = torch.sort(x.to(torch.float64)).values
    n = values.numel()
    if n < 2:
        raise ValueError("a split needs at least two values")
    s1 = torch.cumsum(values, 0)
    s2 = torch.cumsum(values * values, 0)
    k = torch.arange(1, n, dtype=torch.float64)
    left = s2[:-1] - s1[:-1] ** 2 / k
    right = (s2[-1] - s2[:-1]) - (s1[-1] - s1[:-1]) ** 2 / (n - k)
    return int(torch.argmin(left + right)) + 1  # argmin returns the first minimum


def initial_responsibilities(x: Tensor) -> Tensor:
    """N x 2 one-hot responsibilities of the optimal 2-means split (column 0: the lower values)."""
    order = torch.argsort(x.to(torch.float64), stable=True)
    k = two_means_split(x)
    resp = torch.zeros(x.numel(), 2, dtype=torch.float64)
    resp[order[:k], 0] = 1.0
    resp[order[k:], 1] = 1.0
    return resp


def estimate_parameters(x: Tensor, resp: Tensor, reg_covar: float = REG_COVAR) -> tuple[Tensor, Tensor, Tensor]:
    """(n_c, mu_c, v_c) from responsibilities, as scikit-learn's ``_estimate_gaussian_parameters``."""
    nk = resp.sum(0) + WEIGHT_EPS
    means = (resp * x[:, None]).sum(0) / nk
    diff = x[:, None] - means[None, :]
    variances = (resp * diff * diff).sum(0) / nk + reg_covar
    return nk, means, variances


def e_step(x: Tensor, weights: Tensor, means: Tensor, variances: Tensor) -> tuple[float, Tensor]:
    """Mean log-likelihood and N x 2 log-posteriors under the given parameters."""
    precision_chol = 1.0 / torch.sqrt(variances)
    log_det = torch.log(precision_chol)
    y = (x[:, None] - means[None, :]) * precision_chol[None, :]
    log_prob = -0.5 * (_LOG_2PI + y * y) + log_det[None, :]
    weighted = log_prob + torch.log(weights)[None, :]
    norm = torch.logsumexp(weighted, dim=1)
    return float(norm.mean()), weighted - norm[:, None]


def fit_gmm(x: Tensor, resp: Tensor | None = None, *, max_iter: int = MAX_ITER, tol: float = TOL,
            reg_covar: float = REG_COVAR) -> GMMFit:
    """Fit the mixture to the values ``x`` (any shape, flattened) from ``resp`` (None: the 2-means split)."""
    x = x.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    if x.numel() < 2:
        raise ValueError("a two-component mixture needs at least two values")
    resp = initial_responsibilities(x) if resp is None else resp.to(device="cpu", dtype=torch.float64)
    nk, means, variances = estimate_parameters(x, resp, reg_covar)
    weights = nk / x.numel()
    history: list[float] = []
    previous, converged = -math.inf, False
    for _ in range(max_iter):
        likelihood, log_resp = e_step(x, weights, means, variances)
        history.append(likelihood)
        nk, means, variances = estimate_parameters(x, torch.exp(log_resp), reg_covar)
        weights = nk / nk.sum()
        if abs(likelihood - previous) < tol:
            converged = True
            break
        previous = likelihood
    _, log_resp = e_step(x, weights, means, variances)
    return GMMFit(weights, means, variances, torch.exp(log_resp), history, converged)


def normalise_losses(losses: Tensor) -> Tensor | None:
    """(l - min l) / (max l - min l) in float64, or None when every loss is the same."""
    values = losses.detach().to(torch.float64)
    low, high = values.min(), values.max()
    if not bool(high > low):
        return None
    return (values - low) / (high - low)


def clean_probability(losses: Tensor) -> Tensor:
    """DivideMix's clean probability of each sample: min-max-normalised losses, the two-component
    mixture, the posterior of its lower-mean component (float64, on ``losses``' device). Equal
    losses (or fewer than two) give probability 1 everywhere."""
    normalised = normalise_losses(losses) if losses.numel() >= 2 else None
    if normalised is None:
        return torch.ones(losses.shape, dtype=torch.float64, device=losses.device)
    return fit_gmm(normalised).clean_probability.to(losses.device).reshape(losses.shape)
