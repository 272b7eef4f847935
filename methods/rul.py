"""RUL: Relative Uncertainty Learning, features of sample pairs mixed by their relative uncertainty.

Zhang, Wang, Deng, "Relative Uncertainty Learning for Facial Expression Recognition", NeurIPS 2021
(docs/methods.md §5.9, from the design's Part C.1.2).

Two heads on the feature map F before pooling give a 64-d feature mu and a log-variance log s^2
(each BN2d without affine -> Dropout 0.4 -> Flatten -> Linear -> BN1d). The uncertainty of a sample
is u = mean_d exp(log s^2_d). Each sample i is paired with pi(i) from a random permutation of the
batch; with w_i = u_i / (u_i + u_pi(i)) the mixed feature m_i = w_i mu_i + (1 - w_i) mu_pi(i) is
classified by fc and trained with the add-up loss

    L = 0.5 * mean_i CE(fc(m_i), y_i) + 0.5 * mean_i CE(fc(m_i), y_pi(i)),

so a sample can lower its loss by raising its uncertainty and handing the decision to its partner.
The weights are computed as sigmoid(log u_i - log u_pi(i)), the same function without the
overflow of exp. Deployable model: trunk -> mu head -> fc, unmixed, in eval mode.
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
from nlbench.lib.selection import Relabeller, auto_relabel_epoch
from nlbench.options import Range, Tune
from nlbench.seeding import derive_seed

PAIRINGS = ("random", "different_label")
BN_EPS = 2e-5


@dataclass
class RULParams:
    """RUL hyperparameters (defaults: the design's Part C.1.2, which are the official code's)."""

    #: Dimension of the feature mu (and of log s^2) the pairs are mixed in.
    feature_dim: Annotated[int, Range(1, 4096)] = 64
    #: Dropout of both heads.
    dropout: Annotated[float, Range(0, 1, high_open=True), Tune(0.2, 0.6)] = 0.4  # around the code's 0.4
    #: Partners: "random" (a permutation of the batch, the code) or "different_label" (a uniform
    #: partner with another current label, the paper as users read it; itself when there is none).
    pairing: Literal[PAIRINGS] = "random"
    # Tuned on or off: the author calls relabelling "vital" for noisy labels (RUL issue #4), the
    # code has none (docs/methods.md §5.9); the validation split decides.
    #: SCN's relabelling on the unmixed probabilities (not in the official code).
    relabel: Annotated[bool, Tune(choices=(False, True))] = False
    #: Relabel when max prob - prob of the given label exceeds this (with relabel = true).
    relabel_threshold: Annotated[float, Range(0, 1, high_open=True)] = 0.2
    #: First relabelling epoch (1-based); 0 = 10, or 10 % of the epochs in shorter runs (as SCN).
    relabel_epoch: Annotated[int, Range(0, None)] = 0


def head(channels: int, side: tuple[int, int], dim: int, dropout: float) -> nn.Sequential:
    """One RUL head: BN2d (no affine) -> Dropout -> Flatten -> Linear(C*h*w -> dim) -> BN1d."""
    return nn.Sequential(
        nn.BatchNorm2d(channels, eps=BN_EPS, affine=False), nn.Dropout(dropout), nn.Flatten(),
        nn.Linear(channels * side[0] * side[1], dim), nn.BatchNorm1d(dim, eps=BN_EPS))


class RULNet(nn.Module):
    """A backbone trunk with RUL's mu and log-variance heads and its own classifier ``fc``."""

    def __init__(self, trunk: nn.Module, feature_shape: tuple[int, int, int], num_classes: int,
                 dim: int = 64, dropout: float = 0.4) -> None:
        super().__init__()
        channels, h, w = feature_shape
        self.trunk = trunk
        self.mu = head(channels, (h, w), dim, dropout)
        self.log_var = head(channels, (h, w), dim, dropout)
        self.fc = nn.Linear(dim, num_classes)

    def get_classifier(self) -> nn.Module:
        """fc only: it takes the classifier lr; trunk and both heads take the backbone lr (the code's groups)."""
        return self.fc

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mu, log s^2) in train mode; (mu, None) in eval mode, where the log s^2 head is not needed."""
        features = self.trunk.forward_features(x)
        mu = self.mu(features)
        return mu, (self.log_var(features) if self.training else None)


def log_uncertainty(log_var: Tensor) -> Tensor:
    """log u_i = log mean_d exp(log s^2_id), in float32 without overflow."""
    log_var = log_var.float()
    return torch.logsumexp(log_var, dim=1) - math.log(log_var.shape[1])


def mixing_weights(log_u: Tensor, partner: Tensor) -> Tensor:
    """w_i = u_i / (u_i + u_pi(i)), as sigmoid(log u_i - log u_pi(i))."""
    return torch.sigmoid(log_u - log_u[partner])


def mix(mu: Tensor, weights: Tensor, partner: Tensor) -> Tensor:
    """m_i = w_i mu_i + (1 - w_i) mu_pi(i)."""
    w = weights.unsqueeze(1)
    return w * mu + (1 - w) * mu[partner]


def add_up_loss(logits: Tensor, labels: Tensor, partner: Tensor) -> Tensor:
    """0.5 * mean CE(z_i, y_i) + 0.5 * mean CE(z_i, y_pi(i))."""
    return 0.5 * F.cross_entropy(logits, labels) + 0.5 * F.cross_entropy(logits, labels[partner])


def different_label_partners(labels: Tensor, gen: torch.Generator) -> Tensor:
    """For each sample a uniform partner among those with another label; itself when there is none."""
    n = labels.numel()
    scores = torch.rand(n, n, generator=gen, device=labels.device)
    scores = scores.masked_fill(labels.view(n, 1) == labels.view(1, n), -1.0)
    best, partner = scores.max(dim=1)  # the argmax of iid uniforms over the allowed set is uniform on it
    return torch.where(best >= 0, partner, torch.arange(n, device=labels.device))


class RUL(Method):
    """One network whose pairs of samples are mixed by relative uncertainty and trained with the add-up loss."""

    name = "rul"
    summary = "pairs mixed by their relative uncertainty (two heads on the feature map) + add-up loss"
    paper = "Zhang et al., Relative Uncertainty Learning for Facial Expression Recognition, NeurIPS 2021"
    HParams = RULParams
    sample_score_name = "log_uncertainty"  # log u, the sample's (unnormalised) uncertainty

    @classmethod
    def validate(cls, hp: RULParams, settings: dict) -> None:
        if settings.get("batch_size", 2) < 2:
            raise ValueError("RUL's BatchNorm1d heads need at least 2 samples per batch; set train.batch_size >= 2")

    @classmethod
    def canonical(cls, hp: RULParams) -> RULParams:
        if not hp.relabel:  # the relabelling settings have no effect
            return RULParams(feature_dim=hp.feature_dim, dropout=hp.dropout, pairing=hp.pairing)
        return hp

    def build(self, ctx) -> None:
        super().build(ctx)
        trunk = ctx.backbone()
        trunk.reset_classifier(0)
        feature_shape = self.feature_shape(trunk, ctx.settings.image_size, ctx.device)
        with torch.random.fork_rng(devices=[]):
            # Their own seed: the heads' initialisation does not depend on what ran before.
            torch.manual_seed(derive_seed(ctx.seed, "rul-heads"))
            net = RULNet(trunk, feature_shape, ctx.num_classes, self.hp.feature_dim, self.hp.dropout)
        self.net = ctx.compile(net.to(ctx.device))
        self.optimizer = ctx.optimizer([self.net])
        self.first_relabel_epoch = self.hp.relabel_epoch or auto_relabel_epoch(ctx.epochs)
        self.relabeller = Relabeller(ctx.labels, self.hp.relabel_threshold)

    @staticmethod
    def feature_shape(trunk: nn.Module, image_size: int, device: torch.device) -> tuple[int, int, int]:
        """(C, h, w) of the trunk's feature map at ``image_size``, from one no-grad forward in eval mode."""
        was_training = trunk.training
        trunk.eval()
        with torch.no_grad():
            shape = trunk.forward_features(torch.zeros(1, 3, image_size, image_size, device=device)).shape
        trunk.train(was_training)
        return int(shape[1]), int(shape[2]), int(shape[3])

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        self.pair_gen = self.ctx.generator("rul-pairs")  # once per epoch: per step would repeat the draws
        self.relabeller.start_epoch(self.hp.relabel and epoch + 1 >= self.first_relabel_epoch)

    def partners(self, labels: Tensor) -> Tensor:
        """pi: a random permutation of the batch, or different-label partners."""
        if self.hp.pairing == "different_label":
            return different_label_partners(labels, self.pair_gen)
        return torch.randperm(labels.numel(), generator=self.pair_gen, device=labels.device)

    def losses(self, mu: Tensor, log_var: Tensor, labels: Tensor, partner: Tensor) -> dict[str, Tensor]:
        """The add-up loss of the mixed features, with the weights and uncertainties it used."""
        log_u = log_uncertainty(log_var)
        weights = mixing_weights(log_u, partner)
        logits = self.net.fc(mix(mu.float(), weights, partner)).float()
        return {"loss": add_up_loss(logits, labels, partner), "log_u": log_u, "weights": weights}

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        if batch.x.shape[0] < 2:
            # BatchNorm1d cannot normalise one sample in train mode (the official code would crash):
            # a last batch of one (drop_last = false) is skipped; its loss of 0 enters the epoch's mean
            # loss, and skipped_single_batch is the share of the epoch's steps skipped.
            zero = torch.zeros((), device=batch.x.device)
            return {"loss": zero, "skipped_single_batch": zero + 1}
        mu, log_var = self.net(batch.x)
        partner = self.partners(batch.y)
        terms = self.losses(mu, log_var, batch.y, partner)
        # Per-sample logits of the unmixed features of the same forward (before the step), for the
        # memorisation curves and relabelling: the mixed outputs say nothing about one sample.
        with torch.no_grad():
            logits = self.net.fc(mu.detach().float()).float()
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(terms["loss"])
        self.optimizer.step()
        log_u = terms["log_u"].detach()
        out = {"loss": terms["loss"].detach(), "logits": logits,
               "log_uncertainty": log_u.mean(),
               # u itself, for comparison with the paper's figures (clamped at e^80: u is unbounded).
               "uncertainty_mean": torch.exp(log_u.clamp(max=80.0)).mean(),
               "weight_spread": (terms["weights"].detach() - 0.5).abs().mean(),
               "sample_score": log_u, "skipped_single_batch": torch.zeros((), device=log_u.device)}
        if self.relabeller.active:
            out["relabel_share"] = self.relabeller.observe(logits, batch.y, batch.index).float().mean()
        return out

    def on_epoch_end(self, phase: Phase, epoch: int) -> dict[str, float]:
        return self.relabeller.finish_epoch()

    def predict(self, x: Tensor) -> Tensor:
        mu, _ = self.net(x)
        return self.net.fc(mu)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(RUL)
