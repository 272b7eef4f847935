"""Loss terms shared by several methods, written from the equations of docs/methods.md.

All functions take logits (any float dtype; computed in float32) and return batch means unless
their name says otherwise. KL(q || p) = sum_c q_c (log q_c - log p_c).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_divergence(target_logits: Tensor, input_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Batch mean of KL(softmax(target/T) || softmax(input/T)); gradients flow into both sides."""
    return kl_divergence_per_sample(target_logits, input_logits, temperature).mean()


def kl_divergence_per_sample(target_logits: Tensor, input_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample KL(softmax(target/T) || softmax(input/T)), shape B."""
    log_q = F.log_softmax(target_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(input_logits.float() / temperature, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1)


def soft_cross_entropy(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Batch mean of CE(softmax(teacher/T), softmax(student/T)) = -sum_c q_c log p_c."""
    q = F.softmax(teacher_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return -(q * log_p).sum(dim=1).mean()


def cross_entropy_per_sample(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample CE(z, y) = -log softmax(z)_y, shape B."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def mean_softmax(logits: list[Tensor]) -> Tensor:
    """Average of the networks' softmax outputs (the ensemble of CCT, Co-teaching, JoCoR)."""
    return torch.stack([F.softmax(z.float(), dim=1) for z in logits]).mean(dim=0)


def gce_per_sample(logits: Tensor, labels: Tensor, q: float) -> Tensor:
    """Generalized cross-entropy (Zhang and Sabuncu 2018) per sample: (1 - p_y^q) / q, shape B.

    q -> 0 gives CE, q = 1 gives 1 - p_y (MAE up to a factor); the gradient is p_y^q times CE's.
    """
    # p_y^q as exp(q log p_y): where p_y underflows to 0, pow's gradient q p^(q-1) is infinite and
    # times softmax's zero Jacobian gives NaN; through log_softmax the gradient stays finite.
    log_p_y = F.log_softmax(logits.float(), dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
    return (1.0 - torch.exp(q * log_p_y)) / q


def sce_per_sample(logits: Tensor, labels: Tensor, alpha: float, beta: float,
                   log_zero: float = -9.210340371976182) -> tuple[Tensor, Tensor]:
    """Symmetric cross-entropy (Wang et al. 2019) per sample: the CE term -ln max(p_y, 1e-7) and the
    reverse-CE term A (1 - p_y), A = -log_zero (the code's one-hot clipped at 1e-4: A = 9.2103).

    Returns (alpha * CE + beta * RCE, RCE), each shape B. Below p_y = 1e-7 the CE term is capped
    and has no gradient, as the code's clip of the probabilities.
    """
    p = F.softmax(logits.float(), dim=1)
    p_y = p.gather(1, labels.view(-1, 1)).squeeze(1)
    ce = -torch.log(p_y.clamp(min=1e-7))
    rce = -log_zero * (1.0 - p_y)
    return alpha * ce + beta * rce, rce


def elr_probabilities(logits: Tensor) -> tuple[Tensor, Tensor]:
    """ELR's clamped softmax p in [1e-4, 1 - 1e-4] (no gradient where clamped) and its detached,
    renormalised copy p_hat, the input of the temporal-ensemble targets."""
    p = F.softmax(logits.float(), dim=1).clamp(1e-4, 1.0 - 1e-4)
    return p, (p / p.sum(dim=1, keepdim=True)).detach()


def elr_regulariser(p: Tensor, targets: Tensor) -> Tensor:
    """Early-learning regularisation (Liu et al. 2020) per sample: ln(1 - <t_i, p_i>), shape B;
    minimising it pushes p towards the targets t."""
    return torch.log(1.0 - (targets * p).sum(dim=1))


def bivariate_normal_density(x: Tensor, y: Tensor, mean: tuple[float, float],
                             cov: tuple[tuple[float, float], tuple[float, float]]) -> Tensor:
    """Density of the 2-D normal N(mean, cov) at the points (x, y) (tensors of one shape).

    Written out for a symmetric 2 x 2 covariance [[a, b], [b, c]]: the quadratic form is
    (c dx^2 - 2 b dx dy + a dy^2) / det, det = a c - b^2, so no inverse is taken per step.
    """
    (a, b), (_, c) = cov
    det = a * c - b * b
    dx, dy = x.float() - mean[0], y.float() - mean[1]
    quadratic = (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det
    return torch.exp(-0.5 * quadratic) / (2.0 * torch.pi * det**0.5)


def gt_and_nearest_negative(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """NLA's score pair per sample: p_gt = p_y, p_nn = the largest p_k with k != y, and whether
    the label is the argmax (p_gt >= p_nn: a tie counts as correct, as the NLA code's equality test)."""
    p = F.softmax(logits.float(), dim=1)
    p_gt = p.gather(1, labels.view(-1, 1)).squeeze(1)
    is_label = F.one_hot(labels, p.shape[1]).bool()
    p_nn = p.masked_fill(is_label, float("-inf")).amax(dim=1)
    return p_gt, p_nn, p_gt >= p_nn


def naw_weights(logits: Tensor, labels: Tensor, true_mean: tuple[float, float],
                true_cov: tuple[tuple[float, float], tuple[float, float]], false_mean: tuple[float, float],
                false_cov: tuple[tuple[float, float], tuple[float, float]]) -> tuple[Tensor, Tensor]:
    """Noise-aware adaptive weights of NLA (Lee et al. 2025) per sample, and the "label is the argmax" mask.

    w_i is the density at (p_gt, p_nn) of the "true" Gaussian where the label is the argmax, else of
    the "false" one; it keeps its gradient (the official code does not detach it).
    """
    p_gt, p_nn, correct = gt_and_nearest_negative(logits, labels)
    w_true = bivariate_normal_density(p_gt, p_nn, true_mean, true_cov)
    w_false = bivariate_normal_density(p_gt, p_nn, false_mean, false_cov)
    return torch.where(correct, w_true, w_false), correct


def logit_mixture_jsd_per_sample(logits: Tensor, logits_other: Tensor) -> Tensor:
    """NLA code's "JSD" per sample: 1/2 [KL(s(m) || s(z)) + KL(s(m) || s(z'))], m = (z + z')/2,
    s = softmax: the mixture is of logits, not of probabilities. Gradients flow into both views."""
    mixed = 0.5 * (logits.float() + logits_other.float())
    return 0.5 * (kl_divergence_per_sample(mixed, logits) + kl_divergence_per_sample(mixed, logits_other))


def js_divergence_per_sample(logits: Tensor, logits_other: Tensor) -> Tensor:
    """Jensen-Shannon divergence per sample of softmax(z) and softmax(z'):
    1/2 [KL(p || M) + KL(p' || M)], M = (p + p')/2, with log M from log-probabilities (no log 0)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    log_q = F.log_softmax(logits_other.float(), dim=1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(dim=1)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(dim=1)
    return 0.5 * (kl_p + kl_q)
