"""ELR: early-learning regularisation, which keeps the network near its own early predictions.

Liu, Niles-Weed, Razavian, Fernandez-Granda, "Early-Learning Regularization Prevents Memorization
of Noisy Labels", NeurIPS 2020 (docs/methods.md, from the design's Part D.1.6). One network and a
temporal-ensemble target t_i per training sample (N x K, zeros at the start). Each step, with p
the softmax clamped to [1e-4, 1 - 1e-4] and p_hat its detached renormalised copy,

    t_i <- beta t_i + (1 - beta) p_hat_i            (before the loss, as the official code)
    L = CE(z, y) + lambda * mean_i ln(1 - <t_i, p_i>),   beta = 0.7, lambda = 3.

The regulariser pulls p towards t, the network's own early, mostly clean, predictions, so the
wrongly labelled samples are not memorised. The targets are per-sample state: saved in every
checkpoint and restored bit for bit on resume. A sample drawn twice in a batch takes the last
occurrence's p_hat and both read the updated row. ELR+ (two networks, mixup, EMA teachers) is
another method. Deployable model: the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch.nn.functional as F
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.losses import elr_probabilities, elr_regulariser
from nlbench.options import Range, Tune


@dataclass
class ELRParams:
    """ELR hyperparameters (defaults: the official CIFAR-10 configuration)."""

    # Over the official configurations' values (docs/methods.md §5.11): beta 0.7 (CIFAR-10) and 0.9
    # (CIFAR-100, asymmetric); lambda 1, 3 and 7, log-uniformly.
    #: beta, the momentum of the temporal-ensemble targets.
    beta: Annotated[float, Range(0, 1, high_open=True), Tune(0.5, 0.9)] = 0.7
    #: lambda, the weight of the regulariser.
    lam: Annotated[float, Range(0, None), Tune(1.0, 7.0, log=True)] = 3.0


class ELR(Method):
    """One network with cross-entropy plus the early-learning regulariser."""

    name = "elr"
    summary = "one network, CE + 3 ln(1 - <t, p>) towards its own early predictions (targets per sample)"
    paper = "Liu et al., NeurIPS 2020"
    HParams = ELRParams
    sample_score_name = "target_agreement"  # <t, p>: agreement of the prediction with the sample's running target

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()
        self.optimizer = ctx.optimizer([self.net])
        self.targets = ctx.sample_state("elr_targets", (ctx.num_classes,))

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits = self.net(batch.x).float()
        p, p_hat = elr_probabilities(logits)
        beta = self.hp.beta
        self.targets.update(batch.index, beta * self.targets.data[batch.index] + (1 - beta) * p_hat)
        targets = self.targets.data[batch.index]
        ce = F.cross_entropy(logits, batch.y)
        regulariser = elr_regulariser(p, targets)
        loss = ce + self.hp.lam * regulariser.mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        return {"loss": loss.detach(), "loss_ce": ce.detach(), "loss_elr": regulariser.mean().detach(),
                "logits": logits.detach(), "sample_score": (targets * p.detach()).sum(dim=1)}

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(ELR)
