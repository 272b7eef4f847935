"""Standard: one ResNet-18 trained with cross-entropy on the noisy labels (docs/methods.md §5.1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase


class Standard(Method):
    """The baseline every noisy-label method is compared with."""

    name = "standard"
    summary = "one network, plain cross-entropy on the noisy labels"
    paper = "baseline: cross-entropy on the given labels"

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()
        self.optimizer = ctx.optimizer([self.net])

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits = self.net(batch.x).float()
        loss = F.cross_entropy(logits, batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        return {"loss": loss.detach(), "logits": logits.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(Standard)
