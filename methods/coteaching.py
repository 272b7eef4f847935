"""Co-teaching: two networks teach each other on their small-loss samples (docs/methods.md §5.2).

Each mini-batch: both networks compute per-sample cross-entropies; each picks the
floor(R(e) * B) samples of smallest loss; network f is updated on g's pick and g on f's pick,
each with its own Adam optimiser (the shared pipeline's two lr groups). The remember fraction
R(e) = 1 - tau * min(e^c / T_k, 1), with tau the forget rate (the nominal noise rate by default).

Deployable model: ``net1`` (f). The Co-teaching paper evaluates single networks (the code prints
both), and one network costs what the other baselines cost at test time; ``net2`` and the
ensemble (average of softmax) are stored as members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.selection import (
    FORGET_SCHEDULES,
    check_forget_rate,
    coteaching_forget_rate,
    cross_update,
    peer_members,
    resolve_forget_rate,
)
from nlbench.options import Range, Tune

FIDELITIES = ("paper", "code")
NORMALISATIONS = ("mean", "code")


@dataclass
class CoTeachingParams:
    """Co-teaching hyperparameters (defaults: docs/methods.md Part A).

    To reproduce the official code (bhanML/Co-teaching) set ``fidelity = "code"``, which turns on
    both code quirks below at once; each can also be switched on alone.
    """

    #: tau; -1 = the run's nominal noise rate (the paper's choice).
    forget_rate: float = -1.0
    # T_k and c are tuned over the Co-teaching paper's own study of the schedule (T_k in 5, 10, 15;
    # c in 0.5, 1, 2); tau stays the run's noise rate, the paper's choice (forget_rate = -1).
    #: T_k: epochs over which the forget rate ramps up to tau.
    num_gradual: Annotated[int, Range(0, None), Tune(5, 15)] = 10
    #: c: exponent of the ramp, R(e) = 1 - tau * min(e^c / T_k, 1).
    exponent: Annotated[float, Range(0, None, low_open=True), Tune(choices=(0.5, 1.0, 2.0))] = 1.0
    #: "paper": the form above with 0-based epochs. "code": the official linspace(0, tau^c, T_k)
    #: array read at the code's epoch counter e + 1 (§6 #15: tau, not e, raised to the power c).
    schedule: Literal[FORGET_SCHEDULES] = "paper"
    #: "mean": plain mean over the selected set. "code": that mean divided by the keep count again
    #: (the official double normalisation, §6 #16).
    normalisation: Literal[NORMALISATIONS] = "mean"
    #: "paper" (the defaults above) or "code" (schedule = normalisation = "code").
    fidelity: Literal[FIDELITIES] = "paper"


class CoTeaching(Method):
    """Two networks cross-updated on each other's small-loss samples."""

    name = "coteaching"
    summary = "2 networks, each trained on the small-loss samples its peer selects (forget rate = noise rate)"
    paper = "Han et al., Co-teaching: Robust training of deep neural networks with extremely noisy labels, NeurIPS 2018"
    HParams = CoTeachingParams
    uses_noise_rate = True
    single_member = "net1"

    @classmethod
    def validate(cls, hp: CoTeachingParams, settings: dict) -> None:
        check_forget_rate(hp.forget_rate, settings.get("noise_rate", 0.0))

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net1 = ctx.backbone()
        self.net2 = ctx.backbone()
        # Two optimisers: each network is stepped on its own loss (the paper's separate updates).
        self.optimizer1 = ctx.optimizer([self.net1])
        self.optimizer2 = ctx.optimizer([self.net2])
        code = self.hp.fidelity == "code"
        self.schedule = "code" if code else self.hp.schedule
        self.divide_by_keep = code or self.hp.normalisation == "code"
        self.tau = resolve_forget_rate(self.hp.forget_rate, ctx.noise_rate)
        self.forget = 0.0
        self._forget_tensor = torch.zeros((), device=ctx.device)

    def forget_rate(self, epoch: int) -> float:
        """The forget rate of 0-based ``epoch``."""
        return coteaching_forget_rate(epoch, self.tau, self.hp.num_gradual, self.hp.exponent, self.schedule)

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        self.forget = self.forget_rate(epoch)
        self._forget_tensor = torch.tensor(self.forget, device=self.ctx.device)

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits1 = self.net1(batch.x).float()
        logits2 = self.net2(batch.x).float()
        step = cross_update(logits1, logits2, batch.y, self.forget, divide_by_keep=self.divide_by_keep)
        self.optimizer1.zero_grad(set_to_none=True)
        self.optimizer2.zero_grad(set_to_none=True)
        # The two losses depend on disjoint parameters, so one backward of their sum gives each
        # network exactly the gradient of its own loss (the code's two backward passes).
        self.ctx.backward(step.loss_f + step.loss_g)
        self.optimizer1.step()
        self.optimizer2.step()
        return {
            "loss": (step.loss_f + step.loss_g).detach(),
            "loss1": step.loss_f.detach(),
            "loss2": step.loss_g.detach(),
            "forget_rate": self._forget_tensor,
            "logits": logits1.detach(),
            # What the deployable net1 trained on: the small-loss set chosen by net2.
            "selected": step.update_f,
        }

    def predict(self, x: Tensor) -> Tensor:
        return self.net1(x)

    def predict_members(self, x: Tensor, phase: Phase) -> dict[str, Tensor]:
        return peer_members(self.net1(x), self.net2(x))


@nlbench.hookimpl
def register_methods(register) -> None:
    register(CoTeaching)
