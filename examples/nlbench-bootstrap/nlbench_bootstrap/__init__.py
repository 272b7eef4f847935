"""Bootstrapping loss (Reed et al., 2015) as a third-party nlbench method plugin."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import nlbench


@dataclass
class BootstrapParams:
    """Hyperparameters: soft or hard bootstrapping and the weight of the given label."""

    mode: str = "soft"
    #: Weight of the given label in the target; -1 = the paper's value (0.95 soft, 0.8 hard).
    beta: float = -1.0


def bootstrap_loss(logits: Tensor, labels: Tensor, beta: float, mode: str) -> Tensor:
    """Cross-entropy against beta * onehot(y) + (1 - beta) * (own prediction, no gradient)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    with torch.no_grad():
        p = log_p.exp()
        own = p if mode == "soft" else F.one_hot(p.argmax(dim=1), logits.shape[1]).float()
        target = beta * F.one_hot(labels, logits.shape[1]).float() + (1 - beta) * own
    return -(target * log_p).sum(dim=1).mean()


class Bootstrap(nlbench.Method):
    """One network trained on a mix of the given label and its own prediction."""

    name = "bootstrap"
    summary = "bootstrapping loss: target = beta * label + (1 - beta) * own prediction"
    paper = "Reed et al., Training deep neural networks on noisy labels with bootstrapping, ICLR-W 2015"
    HParams = BootstrapParams

    @classmethod
    def validate(cls, hp: BootstrapParams, settings: dict) -> None:
        if hp.mode not in ("soft", "hard"):
            raise ValueError(f"mode must be soft or hard, got {hp.mode!r}")
        if hp.beta != -1.0 and not 0.0 <= hp.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {hp.beta}")

    @property
    def beta(self) -> float:
        """The label weight in use."""
        if self.hp.beta != -1.0:
            return self.hp.beta
        return 0.95 if self.hp.mode == "soft" else 0.8

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()
        self.optimizer = ctx.optimizer([self.net])

    def train_step(self, batch: nlbench.Batch, phase: nlbench.Phase, epoch: int) -> dict[str, Tensor]:
        logits = self.net(batch.x).float()
        loss = bootstrap_loss(logits, batch.y, self.beta, self.hp.mode)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        return {"loss": loss.detach(), "logits": logits.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


@nlbench.hookimpl
def register_methods(register) -> None:
    """Register the bootstrap method with nlbench."""
    register(Bootstrap)
