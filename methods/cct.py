"""CCT: Consensual Collaborative Training, then knowledge distillation (docs/methods.md §5.7).

Training phase: N networks (default 3) trained jointly on one mini-batch with
L = (1 - lambda(e)) * L_sup + lambda(e) * L_cons, where L_sup is the cross-entropy of every
network and L_cons the KL divergence KL(p_k || p_j) over all ordered pairs j != k (no
stop-gradient, T = 1), and lambda(e) the Gaussian ramp of :func:`nlbench.lib.schedules.cct_lambda`.

Distillation phase (paper Eq. 6): a fresh student learns from the frozen networks,
L_kd = 0.5 * sum_j CE(softmax(u_j/U), softmax(v/U)) + w * CE(softmax(v), y), U = 2, w = 0.5
(paper) or 1.5 (official code, ``kd_weights = "code"``); y are the noisy labels the teachers saw
(or their consensus, ``kd_hard_target``). The student is the deployable model; ``kd_recipe``
chooses how it is optimised (the training pipeline, or the official KD script's recipe).

Loss factors: both sums times 1/N (``term_weights = "equal"``), the ratio of the paper's plain
sums and of the code's 0.33. ``consistency = false`` is Table 8's ablation (lambda = 0: N
independent networks, then distillation); one network is Standard (no peers, no distillation).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.losses import kl_divergence, mean_softmax, soft_cross_entropy
from nlbench.lib.schedules import cct_lambda
from nlbench.options import Range, Tune

TERM_WEIGHTS = ("equal", "mean", "code")
KD_RECIPES = ("train", "code")


@dataclass(frozen=True)
class DistillRecipe:
    """How the student is optimised: optimiser, lr (None = the pipeline's two lrs), batch, schedule."""

    optimizer: str
    lr: float | None
    weight_decay: float | None  # None = the pipeline's
    batch_size: int | None  # None = the run's
    milestones: tuple[int, ...] | None  # None = the pipeline's per-epoch lr_decay


#: "train": the training phase's pipeline (Adam, its lrs, lr_decay per epoch, the run's batch);
#: "code": the official KD script (Adamax at PyTorch's default lr 0.002, weight decay 4e-5,
#: batch 64, lr x 0.1 at epochs 40 and 100; docs/methods.md §5.7.4).
RECIPES = {
    "train": DistillRecipe("adam", None, None, None, None),
    "code": DistillRecipe("adamax", 0.002, 4e-5, 64, (40, 100)),
}


@dataclass
class CCTParams:
    """CCT hyperparameters (defaults: docs/methods.md Part A)."""

    #: Number of co-trained networks, 1 to 4 (the paper's Table 8 varies it); 1 = Standard.
    networks: Annotated[int, Range(1, 4)] = 3
    #: Keep the consistency loss L_cons; False = lambda 0 throughout: N independent networks, then
    #: distillation (Table 8's "without consistency" cells).
    consistency: bool = True
    #: Keep the supervision loss L_sup; False gives L = lambda * L_cons (not a paper setting: the
    #: networks learn from each other only, with no labels).
    supervision: bool = True
    # Tuned over [0.3, 1]: the code's 0.9 and JoCoR's README values for the same KL weight (0.65
    # to 0.9, docs/methods.md §5.4) down to 0.3, where supervision keeps most of the weight.
    #: lambda_max of the dynamic balancing: the largest weight L_cons reaches (Eq. 3).
    lambda_max: Annotated[float, Range(0, 1), Tune(0.3, 1.0)] = 0.9
    # Tuned log-uniformly over [0.3, 5]: CCT's 0.65 and NCT's 5 for the same Gaussian ramp (§5.5, §5.7).
    #: beta, the sharpness of the Gaussian ramp lambda(e) = lambda_max * exp(-beta (1 - e/e_r)^2).
    beta: Annotated[float, Range(0, None, low_open=True), Tune(0.3, 5.0, log=True)] = 0.65
    #: e_r = ramp_fraction * epochs.
    ramp_fraction: Annotated[float, Range(0, None, low_open=True)] = 0.9
    #: Hold lambda at lambda_max after e_r (the code lets it decrease slightly).
    clip: bool = False
    #: Factors on the two sums: "equal" (1/N on both: the ratio of paper Eq. 1-3 and of the code,
    #: for which lambda_max and beta were tuned), "mean" (1/N on the CEs, 1/(N(N-1)) on the KLs:
    #: halves L_cons's relative weight for N = 3), "code" (the official code's literal 0.33 on both).
    term_weights: Literal[TERM_WEIGHTS] = "equal"
    #: Distillation epochs; 0 = as many as the training phase, -1 = no distillation.
    distill_epochs: Annotated[int, Range(-1, None)] = 0
    #: U, the temperature of the distillation (Eq. 6).
    temperature_kd: Annotated[float, Range(0, None, low_open=True)] = 2.0
    #: "paper" = 0.5 on the hard-label term (Eq. 6), "code" = 1.5 (official KD script).
    kd_weights: Literal["paper", "code"] = "paper"
    #: Target of the hard-label term: "labels" (the noisy labels, Eq. 6), "teachers" (the
    #: teachers' consensus: argmax of their mean softmax) or "none" (soft terms only).
    kd_hard_target: Literal["labels", "teachers", "none"] = "labels"
    #: How the student is optimised: "train" (the training phase's pipeline) or "code" (the
    #: official KD script: Adamax lr 0.002, weight decay 4e-5, batch 64, lr x 0.1 at epochs 40, 100).
    kd_recipe: Literal[KD_RECIPES] = "train"
    #: Student optimiser, overriding the recipe's: "" (the recipe's), adam or adamax.
    kd_optimizer: Literal["", "adam", "adamax"] = ""
    #: Student learning rate of every group, overriding the recipe's (0 = the recipe's).
    kd_lr: Annotated[float, Range(0, None)] = 0.0
    #: Student weight decay, overriding the recipe's (-1 = the recipe's).
    kd_weight_decay: Annotated[float, Range(-1, None)] = -1.0
    #: Distillation mini-batch size, overriding the recipe's (0 = the recipe's).
    kd_batch_size: Annotated[int, Range(0, 65_536)] = 0


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
        if not hp.consistency and not hp.supervision:
            raise ValueError("with both the consistency and the supervision loss off there is no loss; "
                             "keep one of them")

    @classmethod
    def canonical(cls, hp: CCTParams) -> CCTParams:
        """Settings without effect reset to their defaults, so equivalent runs share one run id.

        Without consistency (or peers) lambda is 0 throughout, so its schedule does nothing; one
        network is Standard: plain CE (factor 1), no consistency, no distillation.
        """
        defaults = CCTParams()
        unused: set[str] = set()
        if hp.networks == 1 or not hp.consistency:
            unused |= {"lambda_max", "beta", "ramp_fraction", "clip"}
        if hp.networks == 1:
            unused |= {f.name for f in dataclasses.fields(CCTParams)
                       if f.name in ("consistency", "term_weights") or f.name.startswith(("kd_", "distill", "temperature_kd"))}
        return dataclasses.replace(hp, **{name: getattr(defaults, name) for name in unused})

    @property
    def distils(self) -> bool:
        """Whether a student is distilled: not with distill_epochs = -1, nor from one network (Standard)."""
        return self.hp.distill_epochs >= 0 and self.hp.networks > 1

    def recipe(self) -> DistillRecipe:
        """The student's optimisation: the kd_recipe preset with the kd_* overrides applied."""
        base, hp = RECIPES[self.hp.kd_recipe], self.hp
        return DistillRecipe(
            optimizer=hp.kd_optimizer or base.optimizer,
            lr=hp.kd_lr or base.lr,
            weight_decay=base.weight_decay if hp.kd_weight_decay < 0 else hp.kd_weight_decay,
            batch_size=hp.kd_batch_size or base.batch_size,
            milestones=base.milestones,
        )

    def build(self, ctx) -> None:
        super().build(ctx)
        self.nets = [ctx.backbone() for _ in range(self.hp.networks)]
        self.optimizer = ctx.optimizer(self.nets, phase="train")
        self.lam = 0.0
        self.lam_tensor = torch.zeros((), device=ctx.device)
        if self.distils:
            # Initialised as the networks were (pretrained backbone if given), in its own phase.
            self.student = ctx.backbone()
            recipe = self.recipe()
            self.student_optimizer = ctx.optimizer([self.student], phase="distill", kind=recipe.optimizer,
                                                   lr=recipe.lr, weight_decay=recipe.weight_decay,
                                                   milestones=recipe.milestones)

    def phases(self) -> list[Phase]:
        phases = [Phase("train", self.ctx.epochs)]
        if self.distils:
            phases.append(Phase("distill", self.hp.distill_epochs or self.ctx.epochs, self.recipe().batch_size))
        return phases

    def train_mode(self, phase: Phase) -> None:
        distilling = phase.name == "distill"
        for net in self.nets:
            net.train(not distilling)
        if self.distils:
            self.student.train(distilling)

    def start_phase(self, phase: Phase) -> None:
        if phase.name == "distill":
            for net in self.nets:  # teachers are frozen
                net.requires_grad_(False)

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        if phase.name == "train":
            # Without consistency (or without peers: one network) lambda stays 0: L = L_sup.
            self.lam = (cct_lambda(epoch, phase.epochs, self.hp.lambda_max, self.hp.beta,
                                   self.hp.ramp_fraction, self.hp.clip)
                        if self.hp.consistency and self.hp.networks > 1 else 0.0)
            # Made once per epoch on the device: a per-step host-to-device copy would block.
            self.lam_tensor = torch.tensor(self.lam, device=self.ctx.device)

    # -- losses ------------------------------------------------------------------------------
    def term_factors(self) -> tuple[float, float]:
        """Factors on the sum of CEs and on the sum of pairwise KLs."""
        n = self.hp.networks
        pairs = n * (n - 1)
        if self.hp.term_weights == "code":
            return 0.33, 0.33
        if self.hp.term_weights == "equal":
            return 1.0 / n, 1.0 / n
        return 1.0 / n, (1.0 / pairs if pairs else 0.0)

    def consensus_loss(self, logits: list[Tensor], labels: Tensor, lam: float) -> dict[str, Tensor]:
        """(1 - lambda) * L_sup + lambda * L_cons for the networks' logits."""
        sup_factor, cons_factor = self.term_factors()
        l_sup = sup_factor * torch.stack([F.cross_entropy(z.float(), labels) for z in logits]).sum()
        pair_terms = ([kl_divergence(logits[k], logits[j]) for j, k in itertools.permutations(range(len(logits)), 2)]
                      if self.hp.consistency else [])  # without consistency L_cons is never used
        l_cons = cons_factor * torch.stack(pair_terms).sum() if pair_terms else torch.zeros((), device=labels.device)
        if self.hp.supervision:
            loss = (1 - lam) * l_sup + lam * l_cons
        else:
            loss = lam * l_cons
        return {"loss": loss, "l_sup": l_sup, "l_cons": l_cons}

    def distillation_loss(self, teacher_logits: list[Tensor], student_logits: Tensor, labels: Tensor) -> Tensor:
        """Paper Eq. 6: 0.5 * sum_j softCE(teachers_j/U, student/U) + w * CE(student, target).

        The hard target is y (the noisy labels), the teachers' consensus class, or absent
        (``kd_hard_target``).
        """
        u = self.hp.temperature_kd
        soft = torch.stack([soft_cross_entropy(t, student_logits, u) for t in teacher_logits]).sum()
        if self.hp.kd_hard_target == "none":
            return 0.5 * soft
        if self.hp.kd_hard_target == "teachers":
            labels = mean_softmax(teacher_logits).argmax(dim=1)
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
        if self.distils:
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
        if self.distils:
            return {"student": self.student.state_dict()}
        return super().deployable_state()  # no distillation: the networks' ensemble is deployed

    def deployment(self) -> dict:
        if self.distils:
            return {"deploys": "a distilled student", "single": "distill/student",
                    "beside": {"teachers' ensemble": "train/ensemble"}}
        return {"deploys": f"a {self.hp.networks}-network ensemble (mean softmax)" if self.hp.networks > 1
                else "one network", "single": "train/net1", "beside": {}}

    def trained_networks(self, phase: Phase) -> int:
        return 1 if phase.name == "distill" else self.hp.networks

    def extra_state(self) -> dict:
        return {"lambda": self.lam}

    def load_extra_state(self, state: dict) -> None:
        self.lam = state.get("lambda", 0.0)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(CCT)
