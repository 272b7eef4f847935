"""Co-teaching+: Co-teaching restricted to the samples the two networks disagree on (docs/methods.md §5.3).

Epochs before ``init_epoch``: plain Co-teaching (§5.2). From ``init_epoch`` on, per mini-batch:
D = {i : argmax z_1,i != argmax z_2,i}; each network picks the floor((1 - forget) * |D|) samples
of D with the smallest cross-entropy and its peer is updated on them. When D is empty, each
network takes a plain cross-entropy step on the whole batch (the official code's fallback, here
without its step-counter gate, §6 #19), and the whole batch counts as selected.

Deployable model: ``net1``, as for Co-teaching (the paper evaluates single networks); ``net2``
and the ensemble (average of softmax) are stored as members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.selection import (
    COTEACHING_PLUS_SCHEDULES,
    check_forget_rate,
    coteaching_plus_forget_rate,
    cross_update,
    peer_members,
    resolve_forget_rate,
)
from nlbench.options import Range, Tune

FIDELITIES = ("paper", "code")
NORMALISATIONS = ("mean", "code")
#: The official code stops the empty-disagreement fallback once (epoch * batch index) reaches this.
CODE_STEP_LIMIT = 5000


@dataclass
class CoTeachingPlusParams:
    """Co-teaching+ hyperparameters (defaults: docs/methods.md Part A).

    ``fidelity = "code"`` reproduces the official code (xingruiyu/coteaching_plus) by turning on
    every quirk below; each can also be switched on alone. With "code" the epoch counter is the
    code's (our 0-based epoch + 1) for the schedule and for the switch at ``init_epoch``.
    """

    #: tau; -1 = the run's nominal noise rate.
    forget_rate: float = -1.0
    # E_k as Co-teaching's T_k (5 to 15); init_epoch from the first epoch to E_k around Part A's 5
    # (no ablation of it is recorded in docs/methods.md §5.3).
    #: E_k: epochs over which the forget rate ramps up to tau.
    num_gradual: Annotated[int, Range(0, None), Tune(5, 15)] = 10
    #: First (0-based) epoch of the disagreement phase; earlier epochs run plain Co-teaching.
    init_epoch: Annotated[int, Range(0, None), Tune(0, 10)] = 5
    #: "constant": tau * min(e / E_k, 1), constant tau after E_k (the code's "type_1" shape).
    #: "rise": the paper's min(e tau / E_k, (1 + (e - E_k) / (E - E_k)) tau), rising to 2 tau (§6 #18).
    #: "code": the official linspace(0, tau, E_k) array read at epoch e + 1.
    schedule: Literal[COTEACHING_PLUS_SCHEDULES] = "constant"
    #: "mean": plain mean over the selected set; "code": divided by the keep count again (§6 #16).
    normalisation: Literal[NORMALISATIONS] = "mean"
    #: Feed softmax probabilities to the cross-entropy in the disagreement phase, as the code does
    #: (a double softmax, §6 #17); False = cross-entropy on the logits.
    double_softmax: bool = False
    #: The code's index bookkeeping (§6 #19): the empty-disagreement fallback only trains while
    #: (code epoch * batch index) < 5000 (afterwards a zero loss, so Adam moves on momentum alone),
    #: and a disagreement set holding the sample of dataset index 0 loses its last member.
    code_indexing: bool = False
    #: "paper" (the defaults above) or "code" (schedule = normalisation = "code", double_softmax
    #: and code_indexing on).
    fidelity: Literal[FIDELITIES] = "paper"


def drop_last_if_index_zero(disagree: Tensor, index: Tensor) -> Tensor:
    """The official code's index-0 quirk: D loses its last member when it holds dataset index 0.

    The code maps D to dataset indices by multiplying with a 0/1 mask and dropping zeros, then
    truncates the list of batch positions to the shorter list of indices.
    """
    positions = torch.arange(disagree.numel(), device=disagree.device)
    has_zero = (disagree & (index == 0)).any()
    last = torch.where(disagree, positions, torch.full_like(positions, -1)).max()
    return disagree & ~(has_zero & (positions == last))


class CoTeachingPlus(Method):
    """Co-teaching whose small-loss exchange uses only the samples the networks disagree on."""

    name = "coteaching_plus"
    summary = "Co-teaching, then small-loss cross-update restricted to the two networks' disagreements"
    paper = "Yu et al., How does disagreement help generalization against label corruption?, ICML 2019"
    HParams = CoTeachingPlusParams
    uses_noise_rate = True
    single_member = "net1"

    @classmethod
    def validate(cls, hp: CoTeachingPlusParams, settings: dict) -> None:
        tau = check_forget_rate(hp.forget_rate, settings.get("noise_rate", 0.0))
        if hp.fidelity == "code" and hp.schedule == "rise":
            raise ValueError("fidelity = code uses the code's schedule (type_1); drop schedule = rise or use fidelity = paper")
        epochs = int(settings.get("epochs", 1))
        form = "code" if hp.fidelity == "code" else hp.schedule
        worst = max(coteaching_plus_forget_rate(e, tau, hp.num_gradual, epochs, form) for e in range(epochs))
        if not 0 <= worst < 1:
            raise ValueError(f"the forget rate reaches {worst:.3f} (tau = {tau}); it must stay below 1")

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net1 = ctx.backbone()
        self.net2 = ctx.backbone()
        self.optimizer1 = ctx.optimizer([self.net1])
        self.optimizer2 = ctx.optimizer([self.net2])
        code = self.hp.fidelity == "code"
        self.code_counter = code
        self.schedule = "code" if code else self.hp.schedule
        self.divide_by_keep = code or self.hp.normalisation == "code"
        self.double_softmax = code or self.hp.double_softmax
        self.code_indexing = code or self.hp.code_indexing
        self.tau = resolve_forget_rate(self.hp.forget_rate, ctx.noise_rate)
        self.forget = 0.0
        # Position of the step in its epoch (checkpoints fall between epochs, so no state to save).
        self.batch_index = 0
        self._forget_tensor = torch.zeros((), device=ctx.device)

    def forget_rate(self, epoch: int) -> float:
        """The forget rate of 0-based ``epoch``."""
        return coteaching_plus_forget_rate(epoch, self.tau, self.hp.num_gradual, self.ctx.epochs, self.schedule)

    def in_disagreement_phase(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` uses the disagreement update (else plain Co-teaching)."""
        counter = epoch + 1 if self.code_counter else epoch
        return counter >= self.hp.init_epoch

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        self.forget = self.forget_rate(epoch)
        self._forget_tensor = torch.tensor(self.forget, device=self.ctx.device)
        self.batch_index = 0

    def losses(self, logits1: Tensor, logits2: Tensor, labels: Tensor, index: Tensor,
               epoch: int) -> dict[str, Tensor]:
        """Both networks' losses, net1's update set and the disagreement share for one batch."""
        disagree = logits1.detach().argmax(dim=1) != logits2.detach().argmax(dim=1)
        out = {"disagreement": disagree.float().mean()}
        if not self.in_disagreement_phase(epoch):
            step = cross_update(logits1, logits2, labels, self.forget, divide_by_keep=self.divide_by_keep)
            out.update(loss1=step.loss_f, loss2=step.loss_g, selected=step.update_f)
            return out
        if self.code_indexing:
            disagree = drop_last_if_index_zero(disagree, index)
        inputs1, inputs2 = logits1, logits2
        if self.double_softmax:
            inputs1, inputs2 = F.softmax(logits1, dim=1), F.softmax(logits2, dim=1)
        step = cross_update(inputs1, inputs2, labels, self.forget, candidates=disagree,
                            divide_by_keep=self.divide_by_keep)
        # Empty D: a plain CE step on the whole batch; the code gates it by its step counter.
        gate = 1.0
        if self.code_indexing:
            gate = float((epoch + 1) * self.batch_index < CODE_STEP_LIMIT)
        full1 = gate * F.cross_entropy(inputs1, labels)
        full2 = gate * F.cross_entropy(inputs2, labels)
        nonempty = disagree.any()
        out.update(
            loss1=torch.where(nonempty, step.loss_f, full1),
            loss2=torch.where(nonempty, step.loss_g, full2),
            selected=torch.where(nonempty, step.update_f, torch.full_like(disagree, gate > 0)),
            empty_disagreement=(~nonempty).float(),
        )
        return out

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits1 = self.net1(batch.x).float()
        logits2 = self.net2(batch.x).float()
        terms = self.losses(logits1, logits2, batch.y, batch.index, epoch)
        self.batch_index += 1
        self.optimizer1.zero_grad(set_to_none=True)
        self.optimizer2.zero_grad(set_to_none=True)
        # Disjoint parameters: one backward of the sum = each network's own gradient.
        self.ctx.backward(terms["loss1"] + terms["loss2"])
        self.optimizer1.step()
        self.optimizer2.step()
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = out["loss1"] + out["loss2"]
        out["forget_rate"] = self._forget_tensor
        out["logits"] = logits1.detach()
        return out

    def predict(self, x: Tensor) -> Tensor:
        return self.net1(x)

    def predict_members(self, x: Tensor, phase: Phase) -> dict[str, Tensor]:
        return peer_members(self.net1(x), self.net2(x))



@nlbench.hookimpl
def register_methods(register) -> None:
    register(CoTeachingPlus)
