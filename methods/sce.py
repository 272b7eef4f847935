"""SCE: symmetric cross-entropy, CE plus a reverse CE that is robust to wrong labels.

Wang, Ma, Chen, Luo, Yi, Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy Labels",
ICCV 2019 (docs/methods.md, from the design's Part D.1.7). One network;

    L = alpha * mean_i -ln max(p_{i,y_i}, 1e-7) + beta * mean_i A (1 - p_{i,y_i}),

A = -ln 1e-4 = 9.2103: the reverse CE -sum_k p_k ln max(onehot_k, 1e-4) of the official code
(``rce_log_zero`` = ln 1e-4). alpha = 0.1, beta = 1.0: the code's CIFAR-10 values. The paper is
recalled to set A = 4 (``rce_log_zero = -4``), 2.3x weaker than the code at the same beta.
Deployable model: the network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Annotated

from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.losses import sce_per_sample
from nlbench.options import Range, Tune

CODE_LOG_ZERO = math.log(1e-4)


@dataclass
class SCEParams:
    """SCE hyperparameters (defaults: the official code's CIFAR-10 run)."""

    # Log-uniform over the code's values: alpha 0.01 (MNIST), 0.1 (CIFAR-10), 6.0 (CIFAR-100); beta
    # 0.1 and 1.0 (docs/methods.md §5.10). Under Adam mostly their ratio matters (weight decay aside).
    #: alpha, the weight of the CE term.
    alpha: Annotated[float, Range(0, None), Tune(0.01, 10.0, log=True)] = 0.1
    #: beta, the weight of the reverse-CE term.
    beta: Annotated[float, Range(0, None), Tune(0.1, 1.0, log=True)] = 1.0
    #: ln of the clipped zero of the one-hot in the reverse CE (A = -rce_log_zero): the code's
    #: ln 1e-4 = -9.2103, or -4 as the paper is recalled to say.
    rce_log_zero: Annotated[float, Range(None, 0, high_open=True)] = CODE_LOG_ZERO


class SCE(Method):
    """One network trained with the symmetric cross-entropy."""

    name = "sce"
    summary = "one network, symmetric cross-entropy: 0.1 CE + 1.0 reverse CE"
    paper = "Wang et al., ICCV 2019"
    HParams = SCEParams
    sample_score_name = "reverse_ce"  # the reverse CE A (1 - p_y), a per-sample loss

    @classmethod
    def canonical(cls, hp: SCEParams) -> SCEParams:
        """Without the reverse term (beta = 0) its A changes nothing: one run id."""
        hp = super().canonical(hp)
        return dataclasses.replace(hp, rce_log_zero=CODE_LOG_ZERO) if hp.beta == 0 else hp

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()
        self.optimizer = ctx.optimizer([self.net])

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        logits = self.net(batch.x).float()
        per_sample, reverse = sce_per_sample(logits, batch.y, self.hp.alpha, self.hp.beta, self.hp.rce_log_zero)
        loss = per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        # sample_score: the reverse CE, A (1 - p_y), larger for samples the network doubts
        return {"loss": loss.detach(), "logits": logits.detach(), "sample_score": reverse.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


@nlbench.hookimpl
def register_methods(register) -> None:
    register(SCE)
