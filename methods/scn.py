"""SCN: Self-Cure Network, attention-weighted logits, rank regularisation and relabelling (docs/methods.md §5.6).

Model: the ResNet-18 feature x (512-d, after global pooling), an importance weight
a = sigmoid(w^T x + b) from a Linear(512 -> 1) attention head, and logits a * (W x + b_c).
Loss: L = L_WCE + L_RR (the official code's equal weights), with L_WCE the cross-entropy of the
scaled logits on the current labels and L_RR = max(0, delta_1 - (mean a_high - mean a_low)), where
the high group is the top floor(beta * B) weights of the batch. From the relabel epoch on, a sample
of the low-importance group whose max probability exceeds the probability of its given label by
more than delta_2 gets the argmax as its new label, through the engine's label store.

Relabels are collected per step and applied at the end of the epoch (default), which is when the
official code's relabels take effect (its data-loader workers hold a copy of the labels until they
are re-forked for the next epoch); ``relabel_timing = "immediate"`` applies them after each step.

Deployable model: the single network (its scaled logits; the argmax equals that of the unscaled ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.selection import Relabeller, auto_relabel_epoch, relabel_mask, scn_margin
from nlbench.options import Range, Tune
from nlbench.seeding import derive_seed

RELABEL_SETS = ("low", "all", "none")
RELABEL_TIMINGS = ("epoch_end", "immediate")
FIDELITIES = ("paper", "code")


@dataclass
class SCNParams:
    """SCN hyperparameters (defaults: docs/methods.md Part A).

    ``fidelity = "code"`` reproduces the official code (kaiwang960112/Self-Cure-Network) by
    relabelling every sample of the batch (§6 #9, as ``relabel = "all"``); for the code's fixed
    margin set ``margin = 0.15`` (its default) or 0.07 (its README's value for batch 64).
    """

    # beta and delta_2 are tuned around the paper's 0.7 and 0.2 (docs/methods.md §5.6; its own
    # ablation ranges are not recorded there); the margin stays scaled with the batch (-1).
    #: Share of each batch in the high-importance group.
    beta: Annotated[float, Range(0, 1, low_open=True, high_open=True), Tune(0.5, 0.9)] = 0.7
    #: delta_1 of the rank regularisation; -1 = scaled with the batch size: 0.07 up to batch 64,
    #: 0.15 from batch 512, linear between (§6 #11; the paper's 0.15 was for batch 1024).
    margin: float = -1.0
    #: delta_2: relabel when max prob - prob of the given label exceeds it.
    relabel_threshold: Annotated[float, Range(0, 1, high_open=True), Tune(0.1, 0.4)] = 0.2
    #: First epoch (1-based) that relabels; 0 = the paper's epoch 10, or 10 % of the epochs
    #: (rounded half up, at least 1) in runs shorter than 10 epochs.
    relabel_epoch: Annotated[int, Range(0, None)] = 0
    #: Which samples may be relabelled: "low" (low-importance group, the paper), "all" (the code), "none".
    relabel: Literal[RELABEL_SETS] = "low"
    #: "epoch_end" (the code's effective timing, see the module docstring) or "immediate".
    relabel_timing: Literal[RELABEL_TIMINGS] = "epoch_end"
    #: gamma of the paper's convex form gamma * L_RR + (1 - gamma) * L_WCE; -1 = L_WCE + L_RR (code, §6 #10).
    gamma: float = -1.0
    #: "paper" or "code" (relabel = "all").
    fidelity: Literal[FIDELITIES] = "paper"


class SCNNet(nn.Module):
    """A timm backbone plus SCN's attention head; ``forward`` gives (scaled logits, importance)."""

    def __init__(self, backbone: nn.Module, attention: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.attention = attention

    def get_classifier(self) -> nn.Module:
        """The head parameters (classifier and attention), which take the classifier lr."""
        return nn.ModuleList([self.backbone.get_classifier(), self.attention])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        importance = torch.sigmoid(self.attention(features)).float()
        logits = importance * self.backbone.get_classifier()(features).float()
        return logits, importance.squeeze(1)


class SCN(Method):
    """One network that learns per-sample importance weights and relabels confident low-weight samples."""

    name = "scn"
    summary = "attention-weighted logits + rank regularisation + relabelling of confident low-importance samples"
    paper = "Wang et al., Suppressing Uncertainties for Large-Scale Facial Expression Recognition, CVPR 2020"
    HParams = SCNParams
    sample_score_name = "weight"  # the importance weight alpha of the attention module

    @classmethod
    def validate(cls, hp: SCNParams, settings: dict) -> None:
        if hp.margin != -1.0 and hp.margin < 0:
            raise ValueError(f"margin must be >= 0 or -1 (= scaled with the batch size), got {hp.margin}")
        if hp.gamma != -1.0 and not 0 <= hp.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1] or -1 (= L_WCE + L_RR), got {hp.gamma}")
        if hp.fidelity == "code" and hp.relabel == "none":
            raise ValueError("fidelity = code relabels every sample; drop relabel = none or use fidelity = paper")

    #: The first relabelling epoch (1-based) of ``relabel_epoch = 0`` (:func:`nlbench.lib.selection.auto_relabel_epoch`).
    auto_relabel_epoch = staticmethod(auto_relabel_epoch)

    @staticmethod
    def low_group(importance: Tensor, beta: float) -> Tensor:
        """Mask of the low-importance group: all but the top floor(beta * B) weights."""
        high = math.floor(beta * importance.numel())
        order = torch.argsort(importance.detach(), descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        return rank >= high

    @staticmethod
    def rank_regularisation(importance: Tensor, beta: float, margin: float) -> Tensor:
        """L_RR = max(0, delta_1 - (mean of the top floor(beta B) weights - mean of the rest)).

        Zero when a group would be empty (a batch too small to split).
        """
        n = importance.numel()
        high = math.floor(beta * n)
        if high == 0 or high == n:
            return importance.sum() * 0.0
        ordered = torch.sort(importance, descending=True).values
        gap = ordered[:high].mean() - ordered[high:].mean()
        return F.relu(margin - gap)

    #: SCN's relabelling rule (shared with every relabelling method: :func:`nlbench.lib.selection.relabel_mask`).
    relabel_mask = staticmethod(relabel_mask)

    def build(self, ctx) -> None:
        super().build(ctx)
        backbone = ctx.backbone()
        with torch.random.fork_rng(devices=[]):
            # Its own seed: the head's initialisation does not depend on what ran before.
            torch.manual_seed(derive_seed(ctx.seed, "scn-attention"))
            attention = nn.Linear(backbone.num_features, 1)
        self.net = SCNNet(backbone, attention.to(ctx.device))
        self.optimizer = ctx.optimizer([self.net])
        self.relabel_set = "all" if self.hp.fidelity == "code" else self.hp.relabel
        self.margin = self.hp.margin if self.hp.margin >= 0 else scn_margin(ctx.batch_size)
        self.first_relabel_epoch = self.hp.relabel_epoch or self.auto_relabel_epoch(ctx.epochs)
        self.relabeller = Relabeller(ctx.labels, self.hp.relabel_threshold, self.hp.relabel_timing)

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        self.relabeller.start_epoch(self.relabel_set != "none" and epoch + 1 >= self.first_relabel_epoch)

    def losses(self, logits: Tensor, importance: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Weighted CE, rank regularisation and their combination for one batch."""
        wce = F.cross_entropy(logits, labels)
        rr = self.rank_regularisation(importance, self.hp.beta, self.margin)
        loss = wce + rr if self.hp.gamma < 0 else self.hp.gamma * rr + (1.0 - self.hp.gamma) * wce
        return {"loss": loss, "loss_wce": wce, "loss_rr": rr}

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits, importance = self.net(batch.x)
        terms = self.losses(logits, importance, batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(terms["loss"])
        self.optimizer.step()
        out = {k: v.detach() for k, v in terms.items()}
        low = self.low_group(importance, self.hp.beta)
        out["importance_high"] = torch.where(~low, importance.detach(), 0.0).sum() / (~low).sum().clamp(min=1)
        out["importance_low"] = torch.where(low, importance.detach(), 0.0).sum() / low.sum().clamp(min=1)
        if self.relabeller.active:
            # Probabilities of the same (pre-step, train-mode) forward pass, as in the code.
            candidates = low if self.relabel_set == "low" else None
            flagged = self.relabeller.observe(logits, batch.y, batch.index, candidates)
            out["relabel_share"] = flagged.float().mean()
        out["logits"] = logits.detach()
        out["sample_score"] = importance.detach()  # the importance weight, split by clean/noisy labels
        return out

    def on_epoch_end(self, phase: Phase, epoch: int) -> dict[str, float]:
        return self.relabeller.finish_epoch()

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)[0]


@nlbench.hookimpl
def register_methods(register) -> None:
    register(SCN)
