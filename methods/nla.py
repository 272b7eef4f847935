"""NLA: Navigating Label Ambiguity, CE re-weighted by a Gaussian of (p_gt, p_nn) plus a flip consistency.

Lee, Choi, Kim, Kim, Nam, "Navigating Label Ambiguity for Facial Expression Recognition in the
Wild", AAAI 2025 (docs/methods.md, from the design's Part D.1.2). One network, two views: v =
the augmented batch and v_f = its horizontal flip, two forward passes. With P = softmax(f(v)),
p_gt = P_y and p_nn the largest other probability, the noise-aware adaptive weight (NAW) is

    w = N((p_gt, p_nn); mu_t, Sigma_t(e))   where y is the argmax ("true" Gaussian),
    w = N((p_gt, p_nn); mu_f, Sigma_f)      elsewhere ("false" Gaussian),

mu_t = (0.5, 0.5), Sigma_t(e) = [[0.8, -0.48 eps(e)], [-0.48 eps(e), 0.8]], eps(e) = 1 - exp(-15 e/E),
mu_f = (0.30, 0.15), Sigma_f = [[0.851103, 0.805097], [0.805097, 0.851103]]. The loss is

    L = 0.5 mean CE + 0.5 mean w CE + 0.5 S mean JSD'(f(v), f(v_f)),   S = 32,

with JSD' the official code's divergence of the logit mixture (``jsd = "probabilities"``: the
textbook Jensen-Shannon divergence). The code sums JSD' over its batch of 32; S = 32 keeps that
balance at any batch size, ``fidelity = "code"`` sums (S = B). w keeps its gradient, as in the code
(``detach_weight`` stops it). Deployable model: the network, on the unflipped image.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.losses import (
    cross_entropy_per_sample,
    js_divergence_per_sample,
    logit_mixture_jsd_per_sample,
    naw_weights,
)
from nlbench.options import Range, Tune

FIDELITIES = ("paper", "code")
JSD_FORMS = ("logits", "probabilities")
#: The code's defaults (main_rafdb.py): means of the two Gaussians over (p_gt, p_nn) ...
TRUE_MEAN = (0.5, 0.5)
FALSE_MEAN = (0.30, 0.15)
#: ... and their standard deviations along the major axis and the major-to-minor ratio.
TRUE_STD, TRUE_RATIO = 0.8, 2.0
FALSE_STD, FALSE_RATIO = 0.91, 6.0
#: The code's batch size, at which its summed JSD' equals S = 32 times the batch mean.
CODE_BATCH = 32.0

Covariance = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class NLAParams:
    """NLA hyperparameters (defaults: the official code, docs/methods.md)."""

    #: lambda_a, the weight of the plain cross-entropy.
    lam_a: Annotated[float, Range(0, None)] = 0.5
    # Under Adam only the ratios of the three terms matter, so lambda_a stays fixed and the other two
    # are tuned log-uniformly around the code's 0.5 over about a decade.
    #: lambda_b, the weight of the NAW-weighted cross-entropy mean w CE.
    lam_b: Annotated[float, Range(0, None), Tune(0.1, 2.0, log=True)] = 0.5
    #: lambda_c, the weight of the consistency term S mean JSD'.
    lam_c: Annotated[float, Range(0, None), Tune(0.05, 2.0, log=True)] = 0.5
    #: S, the factor on the batch-mean JSD' (32: the code's batch sum at its batch size 32).
    jsd_scale: Annotated[float, Range(0, None)] = CODE_BATCH
    #: "logits": the code's KL of the softmax of the mixed logits to each view; "probabilities":
    #: the Jensen-Shannon divergence of the two views' predictive distributions.
    jsd: Literal[JSD_FORMS] = "logits"
    #: The steepness of eps(e) = 1 - exp(-slope e / E), which tilts the "true" Gaussian over training.
    eps_slope: Annotated[float, Range(0, None)] = 15.0
    #: Stop the gradient through the NAW weight w (the code lets it flow).
    detach_weight: bool = False
    #: One forward pass over v and v_f together (BatchNorm statistics over 2B) instead of two (the code).
    joint_forward: bool = False
    #: "paper" (S = jsd_scale) or "code" (S = B: the code's sum over the batch).
    fidelity: Literal[FIDELITIES] = "paper"


def axis_covariance(std: float, ratio: float, sign: float) -> Covariance:
    """The covariance of a Gaussian with standard deviation ``std`` along one diagonal of the plane and
    ``std / ratio`` along the other, in the code's form: variances std^2 + (std/ratio)^2, covariance
    sign * (std^2 - (std/ratio)^2); sign -1 stretches it along p_gt + p_nn = const."""
    major, minor = std * std, (std / ratio) ** 2
    off = sign * (major - minor)
    return ((major + minor, off), (off, major + minor))


def true_covariance(eps: float) -> Covariance:
    """Sigma_t(e): the "true" Gaussian's covariance, its anti-diagonal correlation scaled by eps(e)."""
    (var, off), _ = axis_covariance(TRUE_STD, TRUE_RATIO, -1.0)
    return ((var, eps * off), (eps * off, var))


def false_covariance() -> Covariance:
    """Sigma_f: the "false" Gaussian's covariance, stretched along p_gt = p_nn, fixed over training."""
    return axis_covariance(FALSE_STD, FALSE_RATIO, 1.0)


def naw_epsilon(epoch: int, epochs: int, slope: float = 15.0) -> float:
    """eps(e) = 1 - exp(-slope e / E), e 0-based (the code's "sigma scheduler"): 0 at the first epoch."""
    return 1.0 - math.exp(-slope * epoch / epochs)


def flipped(x: Tensor) -> Tensor:
    """The horizontal flip of an image batch, in the batch's memory layout (torch.flip returns a
    contiguous tensor, which would take a channels_last batch off the fast path)."""
    out = torch.flip(x, dims=[3])
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


class NLA(Method):
    """One network trained with CE, Gaussian-weighted CE and a flip consistency of its predictions."""

    name = "nla"
    summary = ("0.5 CE + 0.5 w CE (w a Gaussian of p_gt and the nearest negative) + flip consistency "
               "(JSD of logit mixtures)")
    paper = "Lee et al., Navigating Label Ambiguity for Facial Expression Recognition in the Wild, AAAI 2025"
    HParams = NLAParams
    sample_score_name = "naw_weight"  # w, the Gaussian density weighting the sample's second CE term
    passes_per_step = 2.0  # the image and its flip, each forward and backward

    @classmethod
    def canonical(cls, hp: NLAParams) -> NLAParams:
        """Settings without effect reset, so equivalent runs share one id: S under the code's batch sum,
        the divergence's form and scale without the consistency term, the weight's gradient stop
        without the NAW term."""
        hp = super().canonical(hp)
        if hp.fidelity == "code" or hp.lam_c == 0:
            hp = dataclasses.replace(hp, jsd_scale=CODE_BATCH)
        if hp.lam_c == 0:
            hp = dataclasses.replace(hp, jsd="logits")
        if hp.lam_b == 0:
            hp = dataclasses.replace(hp, detach_weight=False)
        return hp

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()
        self.optimizer = ctx.optimizer([self.net])
        self.set_epoch(0, ctx.epochs)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Set eps(e) and the "true" covariance of ``epoch`` (fixed within an epoch, as the code)."""
        self.eps = naw_epsilon(epoch, epochs, self.hp.eps_slope)
        self.true_cov = true_covariance(self.eps)
        self._eps = torch.tensor(self.eps, device=self.ctx.device)

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        self.set_epoch(epoch, phase.epochs)

    def forward_views(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Float32 logits of v and of its flip: two forward passes (the code), or one joint pass."""
        v_flipped = flipped(v)
        if self.hp.joint_forward:
            both = self.net(torch.cat([v, v_flipped])).float()
            return both[: v.shape[0]], both[v.shape[0]:]
        return self.net(v).float(), self.net(v_flipped).float()

    def consistency(self, logits: Tensor, logits_flipped: Tensor) -> Tensor:
        """JSD' per sample (the code's logit mixture) or the textbook JSD, as ``jsd`` says."""
        if self.hp.jsd == "probabilities":
            return js_divergence_per_sample(logits, logits_flipped)
        return logit_mixture_jsd_per_sample(logits, logits_flipped)

    def losses(self, logits: Tensor, logits_flipped: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The three terms, their weighted sum ``loss``, the NAW weights and the argmax mask."""
        weights, correct = naw_weights(logits, labels, TRUE_MEAN, self.true_cov, FALSE_MEAN, false_covariance())
        ce = cross_entropy_per_sample(logits, labels)
        naw = (weights.detach() if self.hp.detach_weight else weights) * ce
        divergence = self.consistency(logits, logits_flipped)
        # The code sums JSD' over its batch: S = B is that sum, S = 32 its value at the code's batch.
        scale = float(logits.shape[0]) if self.hp.fidelity == "code" else self.hp.jsd_scale
        loss = (self.hp.lam_a * ce.mean() + self.hp.lam_b * naw.mean()
                + self.hp.lam_c * scale * divergence.mean())
        return {"loss": loss, "loss_ce": ce.mean(), "loss_naw": naw.mean(), "loss_jsd": divergence.mean(),
                "weights": weights, "correct": correct}

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits, logits_flipped = self.forward_views(batch.x)
        terms = self.losses(logits, logits_flipped, batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(terms["loss"])
        self.optimizer.step()
        out = {k: terms[k].detach() for k in ("loss", "loss_ce", "loss_naw", "loss_jsd")}
        out["eps"] = self._eps
        out["correct_share"] = terms["correct"].float().mean()
        out["sample_score"] = terms["weights"].detach()  # w: does NAW weigh the wrong labels down?
        out["logits"] = logits.detach()
        return out

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(NLA)
