"""CCT: Consensual Collaborative Training, then knowledge distillation (docs/methods.md §5.7).

Training phase: N networks (default 3) trained jointly on one mini-batch with
L = (1 - lambda(e)) * L_sup + lambda(e) * L_cons, where L_sup is the cross-entropy of every
network and L_cons the KL divergence KL(p_k || p_j) over all ordered pairs j != k (no
stop-gradient, T = 1), and lambda(e) the Gaussian ramp of :func:`nlbench.schedules.cct_lambda`.

Distillation phase (paper Eq. 6): a fresh student learns from the frozen networks,
L_kd = 0.5 * sum_j CE(softmax(u_j/U), softmax(v/U)) + w * CE(softmax(v), y), U = 2, w = 0.5
(paper) or 1.5 (official code, ``kd_weights = "code"``); y are the noisy labels the teachers saw.
The student is the deployable model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.losses import kl_divergence, mean_softmax, soft_cross_entropy
from nlbench.options import Range
from nlbench.schedules import cct_lambda

TERM_WEIGHTS = ("mean", "thirds", "code")


@dataclass
class CCTParams:
    """CCT hyperparameters (defaults: docs/methods.md Part A)."""

    #: Number of co-trained networks, 1 to 4 (the paper's Table 8 varies it).
    networks: Annotated[int, Range(1, 4)] = 3
    #: Keep the supervision loss L_sup; False gives Table 8's "L_sup off" rows (L = lambda * L_cons).
    supervision: bool = True
    #: lambda_max of the dynamic balancing: the largest weight L_cons reaches (Eq. 3).
    lambda_max: Annotated[float, Range(0, 1)] = 0.9
    #: beta, the sharpness of the Gaussian ramp lambda(e) = lambda_max * exp(-beta (1 - e/e_r)^2).
    beta: Annotated[float, Range(0, None, low_open=True)] = 0.65
    #: e_r = ramp_fraction * epochs.
    ramp_fraction: Annotated[float, Range(0, None, low_open=True)] = 0.9
    #: Hold lambda at lambda_max after e_r (the code lets it decrease slightly).
    clip: bool = False
    #: How the terms are normalised: "mean" (L_sup mean over networks, L_cons mean over ordered
    #: pairs; Part A), "thirds" (1/N times the sums, the code's form with an exact 1/N), "code"
    #: (the literal 0.33 times the sums of the official code).
    term_weights: Literal[TERM_WEIGHTS] = "mean"
    #: Distillation epochs; 0 = as many as the training phase, -1 = no distillation.
    distill_epochs: Annotated[int, Range(-1, None)] = 0
    #: U, the temperature of the distillation (Eq. 6).
    temperature_kd: Annotated[float, Range(0, None, low_open=True)] = 2.0
    #: "paper" = 0.5 on the hard-label term (Eq. 6), "code" = 1.5 (official KD script).
    kd_weights: Literal["paper", "code"] = "paper"


class CCT(Method):
    """Consensual Collaborative Training with knowledge distillation into one student."""

    name = "cct"
    summary = "N networks, supervision -> consensus (KL) with a Gaussian ramp, then KD into one student"
    paper = "Gera & Balasubramanian, Consensual Collaborative Training ... under noisy annotations, IJETT 2021"
    HParams = CCTParams

    @classmethod
    def validate(cls, hp: CCTParams, settings: dict) -> None:
        if hp.networks == 1 and not hp.supervision:
            raise ValueError(
                "one network with the supervision loss off has nothing to learn from (no labels, no peers); "
                "use networks >= 2 or supervision = true"
            )

    def build(self, ctx) -> None:
        super().build(ctx)
        self.nets = [ctx.backbone() for _ in range(self.hp.networks)]
        self.optimizer = ctx.optimizer(self.nets, phase="train")
        self.lam = 0.0
        self.lam_tensor = torch.zeros((), device=ctx.device)
        if self.hp.distill_epochs >= 0:
            # Initialised as the networks were (pretrained backbone if given), in its own phase.
            self.student = ctx.backbone()
            self.student_optimizer = ctx.optimizer([self.student], phase="distill")

    def phases(self) -> list[Phase]:
        phases = [Phase("train", self.ctx.epochs)]
        if self.hp.distill_epochs >= 0:
            phases.append(Phase("distill", self.hp.distill_epochs or self.ctx.epochs))
        return phases

    def train_mode(self, phase: Phase) -> None:
        distilling = phase.name == "distill"
        for net in self.nets:
            net.train(not distilling)
        if self.hp.distill_epochs >= 0:
            self.student.train(distilling)

    def start_phase(self, phase: Phase) -> None:
        if phase.name == "distill":
            for net in self.nets:  # teachers are frozen
                net.requires_grad_(False)

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        if phase.name == "train":
            self.lam = cct_lambda(epoch, phase.epochs, self.hp.lambda_max, self.hp.beta,
                                  self.hp.ramp_fraction, self.hp.clip)
            # Made once per epoch on the device: a per-step host-to-device copy would block.
            self.lam_tensor = torch.tensor(self.lam, device=self.ctx.device)

    # -- losses ------------------------------------------------------------------------------
    def term_factors(self) -> tuple[float, float]:
        """Factors on the sum of CEs and on the sum of pairwise KLs."""
        n = self.hp.networks
        pairs = n * (n - 1)
        if self.hp.term_weights == "code":
            return 0.33, 0.33
        if self.hp.term_weights == "thirds":
            return 1.0 / n, 1.0 / n
        return 1.0 / n, (1.0 / pairs if pairs else 0.0)

    def consensus_loss(self, logits: list[Tensor], labels: Tensor, lam: float) -> dict[str, Tensor]:
        """(1 - lambda) * L_sup + lambda * L_cons for the networks' logits."""
        sup_factor, cons_factor = self.term_factors()
        l_sup = sup_factor * torch.stack([F.cross_entropy(z.float(), labels) for z in logits]).sum()
        pair_terms = [kl_divergence(logits[k], logits[j]) for j, k in itertools.permutations(range(len(logits)), 2)]
        l_cons = cons_factor * torch.stack(pair_terms).sum() if pair_terms else torch.zeros((), device=labels.device)
        if self.hp.supervision:
            loss = (1 - lam) * l_sup + lam * l_cons
        else:
            loss = lam * l_cons
        return {"loss": loss, "l_sup": l_sup, "l_cons": l_cons}

    def distillation_loss(self, teacher_logits: list[Tensor], student_logits: Tensor, labels: Tensor) -> Tensor:
        """Paper Eq. 6: 0.5 * sum_j softCE(teachers_j/U, student/U) + w * CE(student, y)."""
        u = self.hp.temperature_kd
        soft = torch.stack([soft_cross_entropy(t, student_logits, u) for t in teacher_logits]).sum()
        hard = F.cross_entropy(student_logits.float(), labels)
        hard_weight = 0.5 if self.hp.kd_weights == "paper" else 1.5
        return 0.5 * soft + hard_weight * hard

    # -- steps -------------------------------------------------------------------------------
    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        if phase.name == "distill":
            return self._distill_step(batch)
        logits = [net(batch.x).float() for net in self.nets]
        terms = self.consensus_loss(logits, batch.y, self.lam)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(terms["loss"])
        self.optimizer.step()
        out = {k: v.detach() for k, v in terms.items()}
        out["lambda"] = self.lam_tensor
        out["logits"] = mean_softmax([z.detach() for z in logits])
        return out

    def _distill_step(self, batch: Batch) -> dict[str, Tensor]:
        with torch.no_grad():
            teachers = [net(batch.x).float() for net in self.nets]
        student = self.student(batch.x).float()
        loss = self.distillation_loss(teachers, student, batch.y)
        self.student_optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.student_optimizer.step()
        return {"loss": loss.detach(), "logits": student.detach()}

    # -- inference ---------------------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        if self.hp.distill_epochs >= 0:
            return self.student(x)
        return torch.log(mean_softmax([net(x) for net in self.nets]))

    def predict_members(self, x: Tensor, phase: Phase) -> dict[str, Tensor]:
        if phase.name == "distill":
            student = self.student(x)
            return {"model": student, "student": student}
        logits = [net(x) for net in self.nets]
        members = {f"net{i + 1}": z for i, z in enumerate(logits)}
        members["ensemble"] = mean_softmax(logits)
        members["model"] = members["ensemble"]
        return members

    def deployable_state(self) -> dict:
        if self.hp.distill_epochs >= 0:
            return {"student": self.student.state_dict()}
        return super().deployable_state()  # no distillation: the networks' ensemble is deployed

    def extra_state(self) -> dict:
        return {"lambda": self.lam}

    def load_extra_state(self, state: dict) -> None:
        self.lam = state.get("lambda", 0.0)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(CCT)
