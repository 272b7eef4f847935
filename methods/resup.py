"""ReSup: two networks, each one's CE weighted by its peer's clean posterior from a Beta mixture.

Zhang, Lu, Yan, Huang, Ji, Gu, "ReSup: Reliable Label Noise Suppression for Facial Expression
Recognition", IEEE TAFFC 2025 (arXiv 2305.17895; docs/methods.md, ReSup; the design's Part D.1.3).

Two networks and one optimiser. Warm-up (epochs e < W = 1): L = CE1 + CE2. At the start of every
epoch e >= W both networks scan the training set (test transform, eval mode, no gradient): the
similarity of each sample to its label, s_k = cos(one-hot(y), softmax(z_k)) = p_{k,y} / ||p_k||,
clamped to [1e-3, 1 - 1e-3], is fitted per network by a two-component Beta mixture
(``nlbench.lib.bmm``, float64); the posterior of its clean (larger-mean) component, read from a
100-bin monotone lookup table, is c_k(s). A step of epoch e >= W, with s_k from the step's own
forward (detached):

    L = mean_i [ c_2(s_2,i) CE1_i + c_1(s_1,i) CE2_i + 5 (1/K) sum_c (p1_ic - p2_ic)^2 ],

c clamped to [1e-4, 1 - 1e-4] and without gradient: the networks swap decisions (net1's CE is
weighted by net2's clean probability), and the MSE trains both towards agreement. ``fidelity =
"code"`` follows the official code where it differs: the scan draws the run's training
augmentation, the fitted values replace only s >= 1 and s <= 0, and component 1 is the clean one
whatever it fitted. Deployable model: net1 (members net2 and the softmax ensemble).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.bmm import BINS, BMMFit, fit_bmm, look_up, lookup_table
from nlbench.lib.losses import cross_entropy_per_sample
from nlbench.lib.selection import peer_members
from nlbench.options import Range, Tune

FIDELITIES = ("paper", "code")
#: The clamp of the similarities before the fit and the lookup (the code's replacement values).
SIMILARITY_EPS = 1e-3
#: The clamp of the clean weights read from the table (the code's).
WEIGHT_EPS = 1e-4


@dataclass
class ReSupParams:
    """ReSup hyperparameters (defaults: the official code, docs/methods.md, ReSup)."""

    #: W: epochs of plain CE1 + CE2 before the first mixtures (the code: 1).
    warmup_epochs: Annotated[int, Range(1, None)] = 1
    # Tuned log-uniformly over [1, 20] around the code's 5 (no study of it is known).
    #: The weight of the MSE between the two networks' softmax outputs.
    mse_weight: Annotated[float, Range(0, None), Tune(1.0, 20.0, log=True)] = 5.0
    #: "paper" (scan with the test transform, clamp to [1e-3, 1 - 1e-3], the larger-mean component
    #: is clean) or "code" (scan with the training augmentation, the code's replacement of s >= 1
    #: and s <= 0 only, component 1 is clean).
    fidelity: Literal[FIDELITIES] = "paper"


# -- pure pieces ---------------------------------------------------------------------------------
def label_similarity(logits: Tensor, labels: Tensor) -> Tensor:
    """s = cos(one-hot(y), softmax(z)) = p_y / ||p||_2 per sample (float32, no gradient)."""
    p = F.softmax(logits.detach().float(), dim=1)
    return p.gather(1, labels[:, None]).squeeze(1) / p.norm(dim=1)


def clamp_similarity(s: Tensor) -> Tensor:
    """s clamped to [1e-3, 1 - 1e-3]: the fit's input and the lookup's (nlbench)."""
    return s.clamp(SIMILARITY_EPS, 1 - SIMILARITY_EPS)


def code_fit_input(s: Tensor) -> Tensor:
    """The official code's fit input: only s >= 1 becomes 1 - 1e-3 and s <= 0 becomes 1e-3 (values in
    (0.999, 1) stay; the fit's own clamp to [1e-4, 1 - 1e-4] follows). It reads the same table
    entries as :func:`clamp_similarity`; only the fitted mixture differs."""
    return torch.where(s >= 1, 1 - SIMILARITY_EPS, torch.where(s <= 0, SIMILARITY_EPS, s))


def clean_weights(table: Tensor, s: Tensor) -> Tensor:
    """c(s): the table's clean posterior at entry min(99, floor(100 s)) of the clamped s, clamped to
    [1e-4, 1 - 1e-4] (float32 on ``s``'s device)."""
    return look_up(table, clamp_similarity(s)).to(device=s.device, dtype=torch.float32).clamp(
        WEIGHT_EPS, 1 - WEIGHT_EPS)


def warmup_loss(logits1: Tensor, logits2: Tensor, labels: Tensor) -> Tensor:
    """The warm-up loss CE1 + CE2 (batch means)."""
    return F.cross_entropy(logits1.float(), labels) + F.cross_entropy(logits2.float(), labels)


def resup_terms(logits1: Tensor, logits2: Tensor, labels: Tensor, c1: Tensor, c2: Tensor) -> tuple[Tensor, Tensor,
                                                                                                       Tensor]:
    """Per-sample terms (B each) of the swapped loss: c2 CE1, c1 CE2 and (1/K) sum_c (p1_c - p2_c)^2.

    ``c1`` and ``c2`` are the clean weights from network 1's and network 2's mixtures; they enter
    without gradient (they are decisions, not outputs to train). Network 1's CE is weighted by
    network 2's decision and vice versa.
    """
    weighted1 = c2.detach() * cross_entropy_per_sample(logits1, labels)
    weighted2 = c1.detach() * cross_entropy_per_sample(logits2, labels)
    difference = F.softmax(logits1.float(), dim=1) - F.softmax(logits2.float(), dim=1)
    return weighted1, weighted2, difference.pow(2).mean(dim=1)


def resup_loss(logits1: Tensor, logits2: Tensor, labels: Tensor, c1: Tensor, c2: Tensor,
               mse_weight: float = 5.0) -> Tensor:
    """L = mean_i [c2_i CE1_i + c1_i CE2_i + mse_weight MSE(p1_i, p2_i)] (no gradient through c)."""
    weighted1, weighted2, mse = resup_terms(logits1, logits2, labels, c1, c2)
    return (weighted1 + weighted2 + mse_weight * mse).mean()


# -- the method ----------------------------------------------------------------------------------
class ReSup(Method):
    """Two networks trained on CE weighted by the peer's Beta-mixture clean posterior, plus an MSE agreement term."""

    name = "resup"
    summary = ("2 networks; each one's CE is weighted by its peer's clean posterior from a Beta mixture on "
               "label-prediction similarities, + 5 x MSE between their outputs")
    paper = ("Zhang, Lu, Yan, Huang, Ji, Gu, ReSup: Reliable Label Noise Suppression for Facial Expression "
             "Recognition, IEEE TAFFC 2025")
    HParams = ReSupParams
    sample_score_name = "clean_probability"  # c_2: net2's mixture posterior that the label is clean
    single_member = "net1"

    @classmethod
    def validate(cls, hp: ReSupParams, settings: dict) -> None:
        epochs = int(settings.get("epochs", 0) or 0)
        if epochs and hp.warmup_epochs >= epochs:
            raise ValueError(
                f"warmup_epochs = {hp.warmup_epochs} leaves no ReSup epoch of {epochs}; set "
                f"methods.resup.warmup_epochs below the number of epochs")

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net1 = ctx.backbone()
        self.net2 = ctx.backbone()
        # One optimiser over both networks (the code's one Adam over the module holding both).
        self.optimizer = ctx.optimizer([self.net1, self.net2])
        code = self.hp.fidelity == "code"
        self.scan_pipeline = ctx.augmentation if code else "none"
        self.clean_rule = "index" if code else "mean"
        #: Each network's lookup table (2 x 100, float32 on the device), set by the scan; None in the warm-up.
        self.tables: Tensor | None = None
        self.fits: list[BMMFit | None] = [None, None]

    # -- the scan and the mixtures ---------------------------------------------------------
    def scan_similarities(self) -> dict[str, Tensor]:
        """Both networks' label similarities over the training set (and net1's logits for the memorisation record)."""

        def fn(x: Tensor, index: Tensor, labels: Tensor) -> dict[str, Tensor]:
            z1, z2 = self.net1(x).float(), self.net2(x).float()
            return {"s1": label_similarity(z1, labels), "s2": label_similarity(z2, labels), "logits": z1}

        return self.ctx.scan(fn, pipeline=self.scan_pipeline)

    def mixture_table(self, s: Tensor) -> tuple[Tensor, BMMFit | None]:
        """One network's lookup table (float64, 100) and mixture from its similarities ``s``.

        Similarities that are all equal (or fewer than two) carry no split: every sample is clean
        (table of ones) and no mixture is fitted.
        """
        values = code_fit_input(s) if self.hp.fidelity == "code" else clamp_similarity(s)
        if values.numel() < 2 or not bool(values.max() > values.min()):
            return torch.ones(BINS, dtype=torch.float64), None
        fit = fit_bmm(values)
        return lookup_table(fit, fit.clean_component(self.clean_rule)), fit

    def refit(self, s1: Tensor, s2: Tensor) -> None:
        """Both networks' mixtures and lookup tables from their scanned similarities."""
        table1, fit1 = self.mixture_table(s1)
        table2, fit2 = self.mixture_table(s2)
        self.fits = [fit1, fit2]
        self.tables = torch.stack([table1, table2]).to(device=self.ctx.device, dtype=torch.float32)

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        # Fitted here rather than after the previous epoch (the code), so that a resumed run
        # recomputes the mixtures from the checkpointed networks and nothing needs saving.
        if epoch < self.hp.warmup_epochs:
            self.tables, self.fits = None, [None, None]
            return
        out = self.scan_similarities()
        self.refit(out["s1"], out["s2"])

    def on_epoch_end(self, phase: Phase, epoch: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for fit, suffix in zip(self.fits, ("", "_net2"), strict=True):
            if fit is None:
                continue
            clean = fit.clean_component(self.clean_rule)
            metrics[f"bmm_mean_clean{suffix}"] = float(fit.means[clean])
            metrics[f"bmm_weight_clean{suffix}"] = float(fit.weights[clean])
        return metrics

    # -- steps -----------------------------------------------------------------------------
    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        z1, z2 = self.net1(batch.x).float(), self.net2(batch.x).float()
        if epoch < self.hp.warmup_epochs:
            loss = warmup_loss(z1, z2, batch.y)
            out = {"loss1": F.cross_entropy(z1.detach(), batch.y), "loss2": F.cross_entropy(z2.detach(), batch.y)}
        else:
            if self.tables is None:
                raise RuntimeError("a ReSup epoch needs the mixtures of its on_epoch_start scan")
            c1 = clean_weights(self.tables[0], label_similarity(z1, batch.y))
            c2 = clean_weights(self.tables[1], label_similarity(z2, batch.y))
            weighted1, weighted2, mse = resup_terms(z1, z2, batch.y, c1, c2)
            loss = (weighted1 + weighted2 + self.hp.mse_weight * mse).mean()
            out = {"loss1": weighted1.detach().mean(), "loss2": weighted2.detach().mean(),
                   "loss_mse": mse.detach().mean(), "weight1": c2.mean(), "weight2": c1.mean(),
                   # What net1 (deployed) trains with: net2's decision.
                   "selected": c2 > 0.5, "sample_score": c2}
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        work = torch.full((), 2.0 * z1.shape[0], device=loss.device)  # both networks, forward and backward
        return {"loss": loss.detach(), **out, "logits": z1.detach(), "work": work}

    # -- inference -------------------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        return self.net1(x)

    def predict_members(self, x: Tensor, phase: Phase) -> dict[str, Tensor]:
        return peer_members(self.net1(x), self.net2(x))


@nlbench.hookimpl
def register_methods(register) -> None:
    register(ReSup)
