"""JoCoR: two networks trained jointly with a co-regularised loss on small-loss samples (docs/methods.md §5.4).

Per sample: l_i = (1 - lambda) * (CE(z_1,i, y_i) + CE(z_2,i, y_i))
                  + lambda * (KL(p_2,i || p_1,i) + KL(p_1,i || p_2,i)),
with no stop-gradient (both distributions of each KL carry gradients) and T = 1. The batch loss is
the mean of l_i over the floor((1 - forget(e)) * B) samples of smallest l_i (joint selection, not
crossed), minimised by one Adam optimiser over both networks with one backward pass. forget(e)
follows Co-teaching's schedule.

Deployable model: ``net1``. The two networks are pulled to agree, and one network costs at test
time what the other baselines cost; the JoCoR code reports both networks, stored here as members
with the ensemble (average of softmax).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.losses import cross_entropy_per_sample, kl_divergence_per_sample
from nlbench.lib.selection import (
    FORGET_SCHEDULES,
    check_forget_rate,
    coteaching_forget_rate,
    keep_count,
    masked_mean,
    peer_members,
    resolve_forget_rate,
    small_loss_mask,
)
from nlbench.options import Range, Tune

FIDELITIES = ("paper", "code")


@dataclass
class JoCoRParams:
    """JoCoR hyperparameters (defaults: docs/methods.md Part A).

    The official code (hongxin001/JoCoR) differs only in its schedule (``fidelity = "code"`` or
    ``schedule = "code"``) and in its co_lambda default of 0.1, which its own README calls wrong
    for reproduction (§6 #20): set ``co_lambda = 0.1`` to run with it.
    """

    # Tuned over [0.1, 0.95]: the code's default 0.1 to the README's 0.65, 0.85 and 0.9 (80 % noise,
    # CIFAR-100, CIFAR-10), which it says must be retuned per network (docs/methods.md §5.4).
    #: lambda, weight of the symmetric KL co-regularisation (0.9: the README's CIFAR-10 value).
    co_lambda: Annotated[float, Range(0, 1), Tune(0.1, 0.95)] = 0.9
    #: tau; -1 = the run's nominal noise rate.
    forget_rate: float = -1.0
    #: T_k of the Co-teaching schedule.
    num_gradual: Annotated[int, Range(0, None), Tune(5, 15)] = 10  # the Co-teaching paper's 5 to 15
    #: c of the Co-teaching schedule.
    exponent: Annotated[float, Range(0, None, low_open=True)] = 1.0
    #: "paper": forget(e) = tau * min(e^c / T_k, 1); "code": linspace(0, tau^c, T_k) read at e + 1.
    schedule: Literal[FORGET_SCHEDULES] = "paper"
    #: "paper" or "code" (schedule = "code").
    fidelity: Literal[FIDELITIES] = "paper"


class JoCoR(Method):
    """Joint training with co-regularisation: agreement-maximising small-loss training of two nets."""

    name = "jocor"
    summary = "2 networks, one optimiser: joint CE + symmetric KL loss on the jointly selected small-loss samples"
    paper = "Wei et al., Combating noisy labels by agreement: A joint training method with co-regularization, CVPR 2020"
    HParams = JoCoRParams
    uses_noise_rate = True
    single_member = "net1"

    @classmethod
    def validate(cls, hp: JoCoRParams, settings: dict) -> None:
        check_forget_rate(hp.forget_rate, settings.get("noise_rate", 0.0))

    @staticmethod
    def joint_loss_per_sample(logits1: Tensor, logits2: Tensor, labels: Tensor, co_lambda: float) -> Tensor:
        """l_i = (1 - lambda)(CE_1 + CE_2) + lambda (KL(p2 || p1) + KL(p1 || p2)), shape B, no stop-gradient."""
        ce = cross_entropy_per_sample(logits1, labels) + cross_entropy_per_sample(logits2, labels)
        kl = kl_divergence_per_sample(logits2, logits1) + kl_divergence_per_sample(logits1, logits2)
        return (1.0 - co_lambda) * ce + co_lambda * kl

    @staticmethod
    def select(per_sample: Tensor, forget_rate: float) -> tuple[Tensor, Tensor]:
        """The joint small-loss set (mask) and the mean loss over it."""
        keep = keep_count(per_sample.numel(), forget_rate)
        mask = small_loss_mask(per_sample, keep)
        return mask, masked_mean(per_sample, mask, keep)

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net1 = ctx.backbone()
        self.net2 = ctx.backbone()
        # One optimiser over both networks: the joint loss is minimised in one step.
        self.optimizer = ctx.optimizer([self.net1, self.net2])
        self.schedule = "code" if self.hp.fidelity == "code" else self.hp.schedule
        self.tau = resolve_forget_rate(self.hp.forget_rate, ctx.noise_rate)
        self.forget = 0.0
        self._scalars: dict[str, Tensor] = {}

    def forget_rate(self, epoch: int) -> float:
        """The forget rate of 0-based ``epoch``."""
        return coteaching_forget_rate(epoch, self.tau, self.hp.num_gradual, self.hp.exponent, self.schedule)

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        self.forget = self.forget_rate(epoch)
        device = self.ctx.device
        self._scalars = {
            "forget_rate": torch.tensor(self.forget, device=device),
            "lambda": torch.tensor(self.hp.co_lambda, device=device),
        }

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits1 = self.net1(batch.x).float()
        logits2 = self.net2(batch.x).float()
        per_sample = self.joint_loss_per_sample(logits1, logits2, batch.y, self.hp.co_lambda)
        selected, loss = self.select(per_sample, self.forget)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        return {
            "loss": loss.detach(),
            **self._scalars,
            "logits": logits1.detach(),
            # Both networks (net1 included) train on the joint selection.
            "selected": selected,
        }

    def predict(self, x: Tensor) -> Tensor:
        return self.net1(x)

    def predict_members(self, x: Tensor, phase: Phase) -> dict[str, Tensor]:
        return peer_members(self.net1(x), self.net2(x))


@nlbench.hookimpl
def register_methods(register) -> None:
    register(JoCoR)
