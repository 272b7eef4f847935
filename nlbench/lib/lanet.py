"""LA-Net's losses and targets as pure tensor functions (``methods/lanet.py`` trains with them).

* :func:`awing`: the Adaptive Wing loss of heatmap regression (omega 14, theta 0.5, alpha 2.1);
* :func:`target_heatmaps`: Gaussian target heatmaps (sigma 1.5, a 10 x 10 window) and their weight
  maps (10 where the 3 x 3 neighbourhood exceeds 0.2, else 1), for a whole batch at once;
* :func:`neighbours`, :func:`aggregate`, :func:`lde_targets`: the label distribution estimation
  (each sample's prediction replaced by a score-weighted mean of its neighbours' predictions,
  mixed into a running per-sample target);
* :func:`pseudo_labels`, :func:`contrastive_loss`, :class:`KeyQueue`: the expression-landmark
  contrastive loss, a supervised InfoNCE over in-batch keys and a queue of past keys.

Every function works on the whole batch without Python loops over samples; the docstrings give
the equations (design Part D.1.1 items 3-5).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: Adaptive Wing constants of the official code (its epsilon of 1 drops out of every term).
AWING_OMEGA, AWING_THETA, AWING_ALPHA = 14.0, 0.5, 2.1
#: Width of the Gaussian target, in heatmap cells.
HEATMAP_SIGMA = 1.5
#: The target's window: from BEFORE cells before the centre to AFTER cells after it (the code's
#: 10-cell patch, int(3 sigma) = 4 cells on one side, 5 on the other).
WINDOW_BEFORE, WINDOW_AFTER = 5, 4
#: Cells whose 3 x 3 neighbourhood holds a target above THRESHOLD weigh HIGH in the landmark loss.
WEIGHT_THRESHOLD, WEIGHT_HIGH = 0.2, 10.0
#: The label of an empty queue slot: equal to no pseudo label (those are >= -N).
EMPTY_SLOT = torch.iinfo(torch.int64).min
#: Keeps t ln t finite (and its gradient) where a target probability underflows to 0.
TINY = 1e-30


# -- landmark loss -------------------------------------------------------------------------------
def awing(pred: Tensor, target: Tensor, omega: float = AWING_OMEGA, theta: float = AWING_THETA,
          alpha: float = AWING_ALPHA) -> Tensor:
    """Adaptive Wing loss per element: omega ln(1 + d^(alpha - y)) for d = |y - y_hat| < theta, else A d - C.

    A = omega (alpha - y) theta^(alpha - y - 1) / (1 + theta^(alpha - y)) and
    C = theta A - omega ln(1 + theta^(alpha - y)) make the two pieces meet at d = theta.
    """
    diff = (target - pred).abs()
    power = alpha - target
    theta_power = theta**power
    slope = omega * power * theta ** (power - 1) / (1 + theta_power)
    offset = theta * slope - omega * torch.log1p(theta_power)
    # Both branches are finite everywhere (d^(alpha - y) with alpha - y >= 1.1), so torch.where's
    # unused branch passes no NaN into the gradient.
    return torch.where(diff < theta, omega * torch.log1p(diff**power), slope * diff - offset)


def _axis_profile(cells: Tensor, size: int, code: bool, sigma: float) -> Tensor:
    """The Gaussian along one axis (B x L x size) around each landmark's centre cell, 0 outside its window.

    ``cells`` are landmark positions in cells of the heatmap (pixels / stride). The centre is
    floor(cells + 0.5); ``code`` reproduces the official target instead: int() truncates towards
    zero, and for centres c <= 4 its patch starts one cell later (int(c - 4.5) truncated), which
    moves the peak to c + 1 and the window to [c - 4, c + 4].
    """
    if code:
        centre = torch.trunc(cells + 0.5)
        peak = centre + (centre <= WINDOW_AFTER).to(cells.dtype)
    else:
        centre = torch.floor(cells + 0.5)
        peak = centre
    low, high = (peak - WINDOW_BEFORE).unsqueeze(-1), (centre + WINDOW_AFTER).unsqueeze(-1)
    grid = torch.arange(size, device=cells.device, dtype=cells.dtype)
    inside = (grid >= low) & (grid <= high)  # False for NaN: a missing landmark has no target
    gauss = torch.exp(-((grid - peak.unsqueeze(-1)) ** 2) / (2 * sigma**2))
    return torch.where(inside, gauss, torch.zeros_like(gauss))


def target_heatmaps(points: Tensor, height: int, width: int, stride: tuple[float, float],
                    code: bool = False, sigma: float = HEATMAP_SIGMA) -> tuple[Tensor, Tensor]:
    """Target heatmaps H and weight maps W (both B x L x height x width) of landmarks ``points``.

    ``points`` are B x L x 2 (x, y) in pixels of the network input (edge convention; NaN for a
    missing point), ``stride`` the input pixels per heatmap cell along (x, y). H(x, y) =
    exp(-((x - c_x)^2 + (y - c_y)^2) / (2 sigma^2)) inside the window [c - 5, c + 4] on both axes,
    0 elsewhere (the product of two 1-D profiles); W = 10 where the 3 x 3 maximum of H exceeds 0.2,
    else 1. A landmark whose window misses the grid, or a NaN, gives H = 0 and W = 1.
    """
    points = points.float()
    across = _axis_profile(points[..., 0] / stride[0], width, code, sigma)
    down = _axis_profile(points[..., 1] / stride[1], height, code, sigma)
    heat = down.unsqueeze(-1) * across.unsqueeze(-2)
    b, n = heat.shape[:2]
    dilated = F.max_pool2d(heat.reshape(b * n, 1, height, width), 3, stride=1, padding=1).reshape(heat.shape)
    weights = torch.where(dilated > WEIGHT_THRESHOLD, WEIGHT_HIGH, 1.0).to(heat.dtype)
    return heat, weights


def landmark_loss(pred: Tensor, heat: Tensor, weights: Tensor) -> Tensor:
    """L_lm = mean over B x L x h x w of W * AWing(H_hat, H)."""
    return (weights * awing(pred.float(), heat)).mean()


def unswap_flipped(points: Tensor, flipped: Tensor, permutation: tuple[int, ...]) -> Tensor:
    """Landmarks of flipped samples re-indexed back by the (self-inverse) mirror ``permutation``: the
    official code's flip, which mirrors x and keeps every point's index (channel "left eye" then
    lies on the right eye)."""
    back = points[:, list(permutation)]
    return torch.where(flipped.view(-1, 1, 1), back, points)


# -- label distribution estimation ---------------------------------------------------------------
@torch.no_grad()
def neighbours(features: Tensor, k: int) -> Tensor:
    """Indices (B x k) of each sample's k most cosine-similar other samples of the batch (no gradient)."""
    unit = F.normalize(features.detach().float(), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-2.0)  # below any cosine: a sample is never its own neighbour
    return similarity.topk(k, dim=1).indices


def aggregate(probs: Tensor, index: Tensor, scores: Tensor, eps: float = 1e-8) -> Tensor:
    """a_i = sum_j W_ij P_j with W_ij = (c_ij [j in N(i)] + eps / B) / (sum_{j in N(i)} c_ij + eps).

    ``index`` (B x k) are the neighbours N(i), ``scores`` (B x k) their pair scores c_ij; the
    eps / B term applies to every j (the code adds it to the whole B x B matrix), so it adds
    eps / B * sum_j P_j to the numerator.
    """
    b = probs.shape[0]
    weighted = (scores.unsqueeze(-1) * probs[index]).sum(dim=1)
    spread = probs.sum(dim=0, keepdim=True) * (eps / b)
    return (weighted + spread) / (scores.sum(dim=1, keepdim=True) + eps)


def lde_targets(history: Tensor, aggregated: Tensor, momentum: float) -> Tensor:
    """t_i = m b_i + (1 - m) a_i: the running target b mixed with this step's aggregate."""
    return momentum * history + (1 - momentum) * aggregated


def kl_to_prediction(targets: Tensor, logits: Tensor) -> Tensor:
    """KL(t || softmax z) = sum_k t_k (ln t_k - ln p_k), averaged over the batch (torch's "batchmean")."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return (targets * (targets.clamp_min(TINY).log() - log_p)).sum(dim=1).mean()


# -- expression-landmark contrastive loss --------------------------------------------------------
def pseudo_labels(targets: Tensor, index: Tensor, confidence: float, code: bool = False) -> Tensor:
    """argmax t_i where max t_i >= ``confidence``, else a label of the sample alone: -(index + 1)
    (``code``: -index, the official form, which is class 0 for the sample of index 0)."""
    top, label = targets.detach().max(dim=1)
    own = -index if code else -(index + 1)
    return torch.where(top >= confidence, label, own.to(label.dtype))


def contrastive_loss(queries: Tensor, keys: Tensor, bank: Tensor, bank_labels: Tensor, labels: Tensor,
                     temperature: float) -> Tensor:
    """Supervised InfoNCE of queries against in-batch keys and a bank of past keys.

    l_ij = ln(exp(s_ij) + sum_{m: label_m != label_i} exp(q_i . b_m / tau)) - s_ij, s_ij = q_i . k_j / tau;
    L = mean_i of the mean of l_ij over the j with label_j = label_i. The bank's sum is one
    logsumexp per query, joined to the B x B positives with logaddexp: the same value as the
    official B^2 x (1 + Q) logits tensor without materialising it.
    """
    queries, keys, bank = queries.float(), keys.float(), bank.float()
    positive = queries @ keys.T / temperature
    negative = (queries @ bank.T / temperature).masked_fill(labels.unsqueeze(1) == bank_labels.unsqueeze(0),
                                                            float("-inf"))
    # A query whose every bank entry shares its label has no negatives: logsumexp = -inf, l_ij = 0.
    pooled = torch.logsumexp(negative, dim=1, keepdim=True)
    terms = torch.logaddexp(positive, pooled) - positive
    same = (labels.unsqueeze(1) == labels.unsqueeze(0)).to(terms.dtype)
    return ((terms * same).sum(dim=1) / same.sum(dim=1)).mean()


class KeyQueue:
    """The queue of past keys (two Q x D banks, expression and landmark, and their pseudo labels): a
    ring buffer that takes batches of any size. Starts with random unit vectors labelled EMPTY_SLOT."""

    def __init__(self, size: int, dim: int, device: torch.device, generator: torch.Generator) -> None:
        self.keys_u = F.normalize(torch.randn(size, dim, generator=generator), dim=1).to(device)
        self.keys_v = F.normalize(torch.randn(size, dim, generator=generator), dim=1).to(device)
        self.labels = torch.full((size,), EMPTY_SLOT, dtype=torch.long, device=device)
        self.pointer = 0

    @property
    def size(self) -> int:
        return int(self.labels.numel())

    @torch.no_grad()
    def push(self, keys_u: Tensor, keys_v: Tensor, labels: Tensor) -> None:
        """Write a batch at the pointer, wrapping around; of a batch larger than the queue the last
        Q rows stay (each slot is written once: an indexed write with repeats is unordered)."""
        n, size = int(labels.numel()), self.size
        start = max(0, n - size)
        slots = (self.pointer + torch.arange(start, n, device=self.labels.device)) % size
        self.keys_u[slots] = keys_u[start:].to(self.keys_u.dtype)
        self.keys_v[slots] = keys_v[start:].to(self.keys_v.dtype)
        self.labels[slots] = labels[start:].to(self.labels.dtype)
        self.pointer = (self.pointer + n) % size

    def state_dict(self) -> dict[str, Any]:
        return {"keys_u": self.keys_u.cpu(), "keys_v": self.keys_v.cpu(), "labels": self.labels.cpu(),
                "pointer": self.pointer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("keys_u", "keys_v", "labels"):
            saved, own = state[name], getattr(self, name)
            if tuple(saved.shape) != tuple(own.shape):
                raise ValueError(f"saved key queue {name} has shape {tuple(saved.shape)}, this run {tuple(own.shape)}")
            own.copy_(saved.to(own.device))
        self.pointer = int(state["pointer"])
