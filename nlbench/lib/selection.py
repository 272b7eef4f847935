"""Small-loss selection and the per-epoch schedules of the selection/co-training baselines.

Pure functions shared by the Co-teaching, Co-teaching+, JoCoR, NCT and SCN plugins, written from
the equations of docs/methods.md Part B §5.2-5.6 and tested against hand-computed values. Epochs are
0-based, as the engine counts them. "Code" forms reproduce the official implementations, whose
training loops start at epoch 1 (their epoch 0 only evaluates the random initialisation), so our
0-based epoch ``e`` is their epoch ``e + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nlbench.lib.losses import cross_entropy_per_sample, mean_softmax
from nlbench.lib.schedules import gaussian_rampup

#: Guards floor((1 - forget) * n) against float round-off (0.71 * 100 = 70.99999999999999).
_FLOOR_EPS = 1e-9

FORGET_SCHEDULES = ("paper", "code")
COTEACHING_PLUS_SCHEDULES = ("constant", "rise", "code")


# -- small-loss selection ---------------------------------------------------------------------
def keep_count(n: int | Tensor, forget_rate: float) -> int | Tensor:
    """How many samples of ``n`` a small-loss step keeps: floor((1 - forget) * n), at least 1.

    At least one sample is kept so the selected mean is always defined (the official codes would
    average an empty set, giving NaN, when the batch or disagreement set is tiny). ``n`` may be a
    0-dim tensor (the size of a disagreement set), which keeps the computation on the device.
    """
    if isinstance(n, Tensor):
        return torch.floor((1.0 - forget_rate) * n.float() + _FLOOR_EPS).long().clamp(min=1)
    return max(1, math.floor((1.0 - forget_rate) * n + _FLOOR_EPS))


def small_loss_mask(losses: Tensor, keep: int | Tensor, candidates: Tensor | None = None) -> Tensor:
    """Boolean mask of the ``keep`` smallest ``losses`` (among ``candidates`` if given).

    Ties are broken by batch position (stable sort) so the selection is deterministic. ``keep``
    may be a 0-dim tensor; nothing here synchronises the device.
    """
    losses = losses.detach().float()
    if candidates is not None:
        losses = torch.where(candidates, losses, torch.full_like(losses, math.inf))
    order = torch.argsort(losses, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    mask = rank < keep
    if candidates is not None:
        mask = mask & candidates
    return mask


def masked_mean(values: Tensor, mask: Tensor, count: int | Tensor) -> Tensor:
    """sum(values[mask]) / count, without boolean indexing (no device synchronisation)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / count


@dataclass
class CrossUpdate:
    """The two losses of a Co-teaching cross-update and the samples each network trains on."""

    loss_f: Tensor
    loss_g: Tensor
    #: Samples network f trains on: the small-loss set chosen by its peer g (S_g).
    update_f: Tensor
    #: Samples network g trains on: the small-loss set chosen by f (S_f).
    update_g: Tensor
    keep: int | Tensor


def cross_update(logits_f: Tensor, logits_g: Tensor, labels: Tensor, forget_rate: float,
                 candidates: Tensor | None = None, divide_by_keep: bool = False) -> CrossUpdate:
    """Co-teaching's exchange (§5.2): each network selects its small-loss set, the peer trains on it.

    L_f = mean_{i in S_g} CE(z_f,i, y_i) and L_g = mean_{i in S_f} CE(z_g,i, y_i), where S_j holds
    the floor((1 - forget) * n) samples of smallest CE under network j. With ``candidates`` the
    selection is restricted to that subset (Co-teaching+'s disagreement set) and n = its size.
    ``divide_by_keep`` reproduces the official code, which divides the mean by the keep count again.
    """
    ce_f = cross_entropy_per_sample(logits_f, labels)
    ce_g = cross_entropy_per_sample(logits_g, labels)
    n: int | Tensor = labels.numel() if candidates is None else candidates.sum()
    keep = keep_count(n, forget_rate)
    select_f = small_loss_mask(ce_f, keep, candidates)
    select_g = small_loss_mask(ce_g, keep, candidates)
    loss_f = masked_mean(ce_f, select_g, keep)
    loss_g = masked_mean(ce_g, select_f, keep)
    if divide_by_keep:
        loss_f, loss_g = loss_f / keep, loss_g / keep
    return CrossUpdate(loss_f, loss_g, select_g, select_f, keep)


# -- forget-rate schedules --------------------------------------------------------------------
def coteaching_forget_rate(epoch: int, tau: float, num_gradual: int = 10, exponent: float = 1.0,
                           form: str = "paper") -> float:
    """Co-teaching's forget rate 1 - R(e) at 0-based epoch ``e`` (also JoCoR's).

    ``paper``: tau * min(e^c / T_k, 1), i.e. R(e) = 1 - tau * min(e^c / T_k, 1): epoch 0 keeps all.
    ``code``: the official array linspace(0, tau^c, T_k) followed by tau, read at the code's epoch
    counter e + 1 (so the first trained epoch already forgets tau^c / (T_k - 1); for c != 1 the ramp
    peaks at tau^c and jumps to tau at T_k, the code's exponent quirk, §6 #15).
    """
    if form == "paper":
        if num_gradual <= 0:
            return tau
        return tau * min(epoch**exponent / num_gradual, 1.0)
    if form == "code":
        counter = epoch + 1
        if counter >= num_gradual:
            return tau
        return tau**exponent * counter / (num_gradual - 1)
    raise ValueError(f"unknown forget-rate form {form!r}; use one of {', '.join(FORGET_SCHEDULES)}")


def coteaching_remember_rate(epoch: int, tau: float, num_gradual: int = 10, exponent: float = 1.0,
                             form: str = "paper") -> float:
    """R(e) = 1 - forget(e), the share of each batch Co-teaching trains on."""
    return 1.0 - coteaching_forget_rate(epoch, tau, num_gradual, exponent, form)


def coteaching_plus_forget_rate(epoch: int, tau: float, num_gradual: int, epochs: int,
                                form: str = "constant") -> float:
    """Co-teaching+'s forget rate at 0-based epoch ``e`` (E_k = ``num_gradual``, E_max = ``epochs``).

    ``constant`` (default; the code's "type_1" shape): tau * min(e / E_k, 1), constant tau after E_k.
    ``rise`` (paper): min(e * tau / E_k, (1 + (e - E_k) / (E_max - E_k)) * tau), which keeps rising
    after E_k towards 2 * tau at E_max.
    ``code``: the official "type_1" array linspace(0, tau, E_k) then tau, read at epoch e + 1.
    """
    if form == "constant":
        return coteaching_forget_rate(epoch, tau, num_gradual, 1.0, "paper")
    if form == "code":
        return coteaching_forget_rate(epoch, tau, num_gradual, 1.0, "code")
    if form == "rise":
        ramp = tau * epoch / num_gradual if num_gradual > 0 else math.inf
        if epochs <= num_gradual:
            return min(ramp, tau)
        return min(ramp, (1.0 + (epoch - num_gradual) / (epochs - num_gradual)) * tau)
    raise ValueError(f"unknown Co-teaching+ schedule {form!r}; use one of {', '.join(COTEACHING_PLUS_SCHEDULES)}")


# -- NCT --------------------------------------------------------------------------------------
def nct_alpha(epoch: float, rampup_epochs: float, alpha_max: float = 0.9, beta: float = 5.0) -> float:
    """NCT's distillation weight alpha(e) = alpha_max * exp(-beta * (1 - min(e, e_r)/e_r)^2) (clipped).

    With e_r = 20: alpha(0)=0.006, alpha(5)=0.054, alpha(10)=0.258, alpha(15)=0.658, alpha(20+)=0.9.
    """
    return gaussian_rampup(epoch, rampup_epochs, alpha_max, beta, clip=True)


def nct_variability_rate(epoch: int, epochs: int, r_min: float = 0.2, r_max: float = 0.7, warmup: int = 3) -> float:
    """NCT's target-variability rate r(e): r_min up to e_w, then log growth to r_max at E.

    r(e) = r_min + (r_max - r_min) * ln(e - e_w) / ln(E - e_w) for e_w < e < E. With E = 200:
    r(5)=0.27, r(10)=0.38, r(20)=0.47, r(50)=0.56, r(100)=0.63, r(199)=0.70.
    """
    if epoch <= warmup:
        return r_min
    if epoch >= epochs:
        return r_max
    # Here warmup < epoch < epochs, so epochs - warmup >= 2 and the logarithm is positive.
    return r_min + (r_max - r_min) * math.log(epoch - warmup) / math.log(epochs - warmup)


def variability_labels(labels: Tensor, rate: float, num_classes: int, generator: torch.Generator,
                       always_different: bool = False) -> Tensor:
    """A fresh corrupted copy of ``labels`` for NCT's target variability (the input is not changed).

    Each label is, with probability ``rate``, replaced by (y + u) mod K with u ~ U{0..K-1} (NCT's
    code: u = 0 keeps the label, so the effective change rate is rate * (K-1)/K); with
    ``always_different`` u ~ U{1..K-1}, so every drawn label changes.
    """
    flip = torch.rand(labels.shape, generator=generator, device=labels.device) < rate
    low = 1 if always_different else 0
    shift = torch.randint(low, num_classes, labels.shape, generator=generator, device=labels.device)
    return torch.where(flip, (labels + shift) % num_classes, labels)


# -- SCN --------------------------------------------------------------------------------------
def scn_margin(batch_size: int, small: float = 0.07, large: float = 0.15,
               small_batch: int = 64, large_batch: int = 512) -> float:
    """SCN's rank-regularisation margin delta_1 for a batch size (docs/methods.md §6 #11).

    The paper uses 0.15 with batch 1024 and the SCN README 0.07 with batch 64: the margin is 0.07
    up to batch 64, 0.15 from batch 512 on, and linear in the batch size between (e.g. 256 -> 0.104).
    """
    if batch_size <= small_batch:
        return small
    if batch_size >= large_batch:
        return large
    return small + (large - small) * (batch_size - small_batch) / (large_batch - small_batch)


def resolve_forget_rate(forget_rate: float, noise_rate: float) -> float:
    """tau: the configured forget rate, or the run's nominal noise rate when it is -1."""
    return noise_rate if forget_rate < 0 else forget_rate


def check_forget_rate(forget_rate: float, noise_rate: float) -> float:
    """tau of a ``validate``: the ``forget_rate`` option must be in [0, 1) or -1 (= the noise rate),
    and so must the rate it resolves to; raises ValueError saying which, returns tau."""
    if forget_rate != -1.0 and not 0 <= forget_rate < 1:
        raise ValueError(f"forget_rate must be in [0, 1) or -1 (= the noise rate), got {forget_rate}")
    tau = resolve_forget_rate(forget_rate, noise_rate)
    if not 0 <= tau < 1:
        raise ValueError(f"the forget rate must be in [0, 1), got {tau} (from the noise rate)")
    return tau


def peer_members(logits1: Tensor, logits2: Tensor) -> dict[str, Tensor]:
    """Evaluation members of a two-network method whose deployable model is net1.

    The Co-teaching family and JoCoR evaluate single networks; the ensemble is the average of
    softmax outputs, as their code prints it.
    """
    return {"net1": logits1, "net2": logits2, "ensemble": mean_softmax([logits1, logits2]), "model": logits1}


def auto_relabel_epoch(epochs: int) -> int:
    """SCN's first relabelling epoch (1-based): 10, or 10 % of the epochs (rounded half up, at least 1)
    in runs shorter than that."""
    return 10 if epochs >= 10 else max(1, math.floor(0.1 * epochs + 0.5))


def relabel_mask(logits: Tensor, labels: Tensor, threshold: float, candidates: Tensor | None = None) -> Tensor:
    """SCN's relabelling rule: max prob - prob of the given label > ``threshold`` (within ``candidates``)."""
    probs = torch.softmax(logits.detach().float(), dim=1)
    gap = probs.max(dim=1).values - probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    mask = gap > threshold
    return mask if candidates is None else mask & candidates


class Relabeller:
    """SCN-style relabelling through the label store, shared by every method that relabels.

    Each step :meth:`observe` flags the samples whose prediction beats their current label by more
    than the threshold; the flags are written to ``ctx.labels`` at the end of the epoch (default:
    when the official SCN code's relabels take effect) or after each step (``timing =
    "immediate"``). A sample seen twice in an epoch (oversampling) takes its last flagged
    prediction, resolved on the device without a synchronisation.
    """

    def __init__(self, labels: Any, threshold: float, timing: str = "epoch_end") -> None:
        self.labels, self.threshold, self.timing = labels, threshold, timing
        self.active = False
        self._pending: list[tuple[Tensor, Tensor, Tensor]] = []
        self._changes_at_start = labels.changes.clone()

    def start_epoch(self, active: bool) -> None:
        """Begin an epoch; ``active`` says whether it relabels at all."""
        self.active = active
        self._pending = []
        self._changes_at_start = self.labels.changes.clone()

    def observe(self, logits: Tensor, labels: Tensor, index: Tensor, candidates: Tensor | None = None) -> Tensor:
        """Flag this step's samples to relabel (returns the mask; nothing is flagged while inactive)."""
        if not self.active:
            return torch.zeros_like(labels, dtype=torch.bool)
        flagged = relabel_mask(logits, labels, self.threshold, candidates)
        self._pending.append((index, logits.detach().argmax(dim=1), flagged))
        if self.timing == "immediate":
            self.apply()
        return flagged

    def apply(self) -> None:
        """Write the collected relabels into the label store (the last flagged one wins per sample)."""
        if not self._pending:
            return
        index = torch.cat([p[0] for p in self._pending])
        labels = torch.cat([p[1] for p in self._pending])
        flagged = torch.cat([p[2] for p in self._pending])
        self._pending = []
        # Per dataset sample, the position of its last flagged occurrence (-1: none).
        positions = torch.where(flagged, torch.arange(index.numel(), device=index.device), -1)
        store = self.labels
        last = torch.full_like(store.current, -1).scatter_reduce(0, index, positions, reduce="amax")
        new = torch.where(last >= 0, labels[last.clamp(min=0)], store.current)
        store.relabel(torch.arange(new.numel(), device=new.device), new)

    def finish_epoch(self) -> dict[str, float]:
        """Apply what is pending; the epoch's number of label changes (``relabelled_epoch``) when active."""
        self.apply()
        if not self.active:
            return {}
        return {"relabelled_epoch": float((self.labels.changes - self._changes_at_start).item())}
