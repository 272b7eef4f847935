"""GCE: generalized cross-entropy, a loss between CE and MAE that trusts confident samples.

Zhang and Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
Labels", NeurIPS 2018 (docs/methods.md, from the design's Part D.1.7). One network;

    L = mean_i (1 - p_{i,y_i}^q) / q,   q = 0.7,

whose gradient is p_y^q times the CE gradient: samples the network already doubts (often the
wrongly labelled ones) pull less. The paper's truncated variant (pruning at scheduled epochs) is
not offered: it is in no code by the authors. Deployable model: the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.losses import gce_per_sample
from nlbench.options import Range, Tune


@dataclass
class GCEParams:
    """GCE hyperparameters (default: the SCE repository's GCE baseline)."""

    #: q in (0, 1]: 0 would be CE, 1 is 1 - p_y.
    q: Annotated[float, Range(0, 1, low_open=True), Tune(0.1, 1.0)] = 0.7  # near-CE 0.1 to MAE-like 1


class GCE(Method):
    """One network trained with the generalized cross-entropy."""

    name = "gce"
    summary = "one network, generalized cross-entropy (1 - p_y^q)/q, q = 0.7"
    paper = "Zhang and Sabuncu, NeurIPS 2018"
    HParams = GCEParams
    sample_score_name = "weight"  # p_y^q, the weight of the sample's CE gradient

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()
        self.optimizer = ctx.optimizer([self.net])

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits = self.net(batch.x).float()
        per_sample = gce_per_sample(logits, batch.y, self.hp.q)
        loss = per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        # sample_score: p_y^q, the weight of the sample's CE gradient
        return {"loss": loss.detach(), "logits": logits.detach(),
                "sample_score": (1.0 - self.hp.q * per_sample.detach())}

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(GCE)
