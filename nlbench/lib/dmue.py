"""DMUE's losses, statistics and ramps, written from the equations of docs/methods.md (DMUE).

She et al., "Dive into Ambiguity: Latent Distribution Mining and Pairwise Uncertainty Estimation
for Facial Expression Recognition", CVPR 2021. Pure functions of tensors and epochs (losses in
float32); ``methods/dmue.py`` wires them into the multi-branch network. K is the number of
classes; auxiliary branch c is trained on the samples whose label is not c, with K - 1 outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from nlbench.lib.mixmatch import sharpen

#: Below this spread a row of class-mean cosines counts as constant (float noise on values in [-1, 1]).
FLAT_ROW = 1e-6


# -- schedules ---------------------------------------------------------------------------------
def ramp_epochs(setting: int, epochs: int) -> int:
    """a: the setting, or for 0 max(1, round(E / 6)) rounded half up (the code's 6 of 36 epochs)."""
    return setting if setting > 0 else max(1, math.floor(epochs / 6 + 0.5))


def ramp_up(epoch: int, a: int) -> float:
    """r_up(e) = exp(-5 (1 - e/a)^2) up to e = a, then 1: the weight of the target branch's losses."""
    if epoch > a:
        return 1.0
    return math.exp(-5.0 * (1.0 - epoch / a) ** 2)


def ramp_down(epoch: int, a: int) -> float:
    """r_down(e) = 1 before e = a, then exp(-(1 - a/e)^2): the weight of the auxiliary branches' loss."""
    if epoch < a:
        return 1.0
    return math.exp(-((1.0 - a / epoch) ** 2))


# -- the label split ---------------------------------------------------------------------------
def branch_members(labels: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """(rows, targets) of auxiliary branch c: the rows whose label is not c, with labels above c
    shifted down by one so that they index the branch's K - 1 outputs."""
    rows = (labels != c).nonzero().squeeze(1)
    kept = labels[rows]
    return rows, kept - (kept > c).long()


def batch_has_every_class_twice(counts: list[int]) -> bool:
    """The official code's ``check_batch``: every class has at least 2 samples in the batch."""
    return min(counts) >= 2


# -- latent distribution -----------------------------------------------------------------------
def insert_class(probabilities: Tensor, c: int) -> Tensor:
    """K - 1 probabilities of branch c as a K-vector with 0 at class c (the others in order)."""
    zero = probabilities.new_zeros(probabilities.shape[0], 1)
    return torch.cat([probabilities[:, :c], zero, probabilities[:, c:]], dim=1)


def soft_targets(branch_logits: Tensor, c: int, temperature: float) -> Tensor:
    """The latent label distribution of samples of class c: branch c's softmax sharpened with T
    (p^(1/T), renormalised), as a K-vector with 0 at c. Gradients flow unless the caller stops them."""
    return insert_class(sharpen(F.softmax(branch_logits.float(), dim=1), temperature), c)


def soft_loss(logits: Tensor, labels: Tensor, targets: Tensor, rows: Tensor) -> Tensor:
    """L_soft = mean over the ``rows`` (a B mask) and the K classes of (p with p_y set to 0 - target)^2;
    0 when no row is used."""
    p = F.softmax(logits.float(), dim=1)
    masked = p * (1.0 - F.one_hot(labels, p.shape[1]).float())
    squared = (masked - targets.float()).pow(2) * rows.float().unsqueeze(1)
    return squared.sum() / (rows.sum() * p.shape[1]).clamp(min=1)


# -- similarity-preserving distillation ----------------------------------------------------------
def sp_loss(branch_logits: Tensor, target_features: Tensor) -> Tensor:
    """MSE between the row-normalised Gram matrices of a branch's logits and of the same samples'
    target-branch features (after dropout and neck)."""
    a = branch_logits.float()
    h = target_features.float()
    return F.mse_loss(F.normalize(a @ a.T, dim=1), F.normalize(h @ h.T, dim=1))


# -- pairwise uncertainty ----------------------------------------------------------------------
def class_mean_cosines(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(M, present): M_ic = mean over the batch's samples j of class c of cos(f_i, f_j) (j = i
    included), B x K, 0 for a class without samples; ``present`` marks the classes in the batch."""
    unit = F.normalize(features.float(), dim=1)  # a zero feature has cosine 0 with all (the code: NaN)
    onehot = F.one_hot(labels, num_classes).float()
    counts = onehot.sum(dim=0)
    return (unit @ unit.T) @ onehot / counts.clamp(min=1), counts > 0


def scale_rows(means: Tensor, present: Tensor) -> Tensor:
    """Each row of M min-max scaled to [0, 1] over the present classes; absent classes and rows
    whose present values are equal give 0 (the code divides 0 by 0 there)."""
    low = torch.where(present, means, torch.inf).min(dim=1, keepdim=True).values
    high = torch.where(present, means, -torch.inf).max(dim=1, keepdim=True).values
    spread = high - low
    varied = spread > FLAT_ROW
    scaled = (means - low) / torch.where(varied, spread, torch.ones_like(spread))
    return torch.where(present & varied, scaled, torch.zeros_like(scaled))


def uncertainty_inputs(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[scaled class-mean cosines, one-hot label]: the 2K inputs of the uncertainty head, B x 2K."""
    means, present = class_mean_cosines(features, labels, num_classes)
    return torch.cat([scale_rows(means, present), F.one_hot(labels, num_classes).float()], dim=1)


def scaled_cross_entropy(logits: Tensor, scores: Tensor, labels: Tensor) -> Tensor:
    """CE(s_i z_i, y_i), batch mean: a low score s flattens a sample's softmax and its pull."""
    return F.cross_entropy(scores.float().unsqueeze(1) * logits.float(), labels)


def total_loss(ce: Tensor, soft: Tensor, sp: Tensor, aux: Tensor, up: float, down: float,
               soft_weight: float, sp_weight: float) -> Tensor:
    """L = r_up (CE + w L_soft + gamma L_sp) + r_down L_aux."""
    return up * (ce + soft_weight * soft + sp_weight * sp) + down * aux
