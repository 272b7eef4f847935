"""DivideMix's MixMatch pieces, written from its equations (docs/methods.md, DivideMix).

Pure functions of probabilities and logits (computed in float32); the method wires them up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """p^(1/T) / sum_c p_c^(1/T), row-wise."""
    powered = p.float() ** (1.0 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def co_refine(onehot: Tensor, weight: Tensor, mean_prediction: Tensor, temperature: float) -> Tensor:
    """Label co-refinement: sharpen(w y + (1 - w) p) with w the (peer's) clean probability per row."""
    w = weight.float().reshape(-1, 1)
    return sharpen(w * onehot.float() + (1 - w) * mean_prediction.float(), temperature)


def co_guess(probabilities: list[Tensor], temperature: float) -> Tensor:
    """Label co-guessing: sharpen the mean of the given predictions (both networks, both views)."""
    return sharpen(torch.stack([p.float() for p in probabilities]).mean(dim=0), temperature)


def mix_weight(draw: float) -> float:
    """lambda' = max(lambda, 1 - lambda): the mixed row stays closer to its own input."""
    return max(draw, 1.0 - draw)


def mix(inputs: Tensor, targets: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp of every row with the row ``perm`` sends it to: lam * a + (1 - lam) * a[perm], for inputs and targets alike."""
    return (lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm])


def labeled_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """L_x = -mean over rows of sum_c q_c log softmax(z)_c."""
    return -(targets.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def unlabeled_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """L_u = mean over rows and classes of (softmax(z) - q)^2 (the code's mean over both)."""
    if logits.shape[0] == 0:
        return logits.float().sum() * 0.0
    return (F.softmax(logits.float(), dim=1) - targets.float()).pow(2).mean()


def prior_penalty(logits: Tensor) -> Tensor:
    """sum_c (1/K) ln((1/K) / pbar_c), pbar the mean softmax over all rows: KL(uniform || pbar)."""
    pbar = F.softmax(logits.float(), dim=1).mean(dim=0)
    k = pbar.numel()
    return (torch.log(torch.full_like(pbar, 1.0 / k)) - torch.log(pbar)).sum() / k


def lambda_u(base: float, epoch: int, step: int, steps: int, warmup: int, rampup: int) -> float:
    """lambda_u * clip((e + b / I - W) / rampup, 0, 1): e the 0-based epoch, b the step in the
    segment, I = the code's iterations per epoch, W the warm-up epochs."""
    if rampup <= 0:
        return float(base)
    current = epoch + step / steps
    return float(base) * min(max((current - warmup) / rampup, 0.0), 1.0)


def iterations(labeled: int, batch: int) -> int:
    """I = floor(|L| / B) + 1, the official code's iterations of a DivideMix epoch (the ramp's step unit)."""
    return labeled // batch + 1


def negative_entropy(logits: Tensor) -> Tensor:
    """mean_i sum_c p_ic ln p_ic: the warm-up confidence penalty (added to CE, it favours less confident outputs)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


def warmup_epochs(setting: int, epochs: int) -> int:
    """W: the setting, or for 0 max(1, round(0.1 E)) (rounded half up)."""
    return setting if setting > 0 else max(1, math.floor(0.1 * epochs + 0.5))
