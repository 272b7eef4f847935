"""DivideMix: two networks, loss-based division by a Gaussian mixture, MixMatch on the peer's division.

Li, Socher, Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised Learning", ICLR 2020
(docs/methods.md, DivideMix; the design's Part D.1.5).

Warm-up (epochs e < W): both networks take a CE step on every engine batch. From epoch W on, at
the start of every epoch each network k scans the training set (test transform, eval mode): its
per-sample CE losses, min-max normalised, are fitted by a two-component 1-D Gaussian mixture and
w_k = the posterior of the lower-mean component. Co-divide: network 1 trains on its peer's
labeled set L_2 = {w_2 > tau} (segment "net1"), then network 2 on L_1 (segment "net2"). A step of
segment "net1" (net2 fixed in eval mode):

    x, x' = batch.x and a second augmentation of batch.raw;  u, u' = two augmentations of B samples
    of U_2 (fetched by index, cycled);  q_u = sharpen(mean softmax of net1, net2 on u, u');
    q_x = sharpen(w_2 y + (1 - w_2) mean softmax of net1 on x, x');  lambda' = max(l, 1 - l),
    l ~ Beta(alpha, alpha);  mix [x, x', u, u'] and [q_x, q_x, q_u, q_u] with a permutation;
    L = L_x + lambda_u(e, b) L_u + prior penalty, a step of net1 only.

Deployable model: the sum of both networks' logits (the code's test); single member net1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase, Segment
from nlbench.lib.gmm import fit_gmm, normalise_losses
from nlbench.lib.losses import cross_entropy_per_sample
from nlbench.lib.mixmatch import (
    co_guess,
    co_refine,
    iterations,
    labeled_loss,
    lambda_u,
    mix,
    mix_weight,
    negative_entropy,
    prior_penalty,
    unlabeled_loss,
    warmup_epochs,
)
from nlbench.lib.selection import peer_members
from nlbench.options import Range, Tune
from nlbench.seeding import derive_seed

SEGMENTS = ("net1", "net2")


@dataclass
class DivideMixParams:
    """DivideMix hyperparameters (defaults: docs/methods.md, DivideMix)."""

    #: W, the CE warm-up epochs of both networks; 0 = max(1, round(0.1 * epochs)).
    warmup_epochs: Annotated[int, Range(0, None)] = 0
    #: tau: a sample is labeled for the peer when its clean probability exceeds it.
    tau: Annotated[float, Range(0, 1, high_open=True), Tune(0.3, 0.7)] = 0.5  # around the code's 0.5
    #: T, the sharpening temperature of co-refinement and co-guessing.
    temperature: Annotated[float, Range(0, None, low_open=True)] = 0.5
    # alpha and lambda_u are choices among the paper's per-setting values (docs/methods.md §5.12):
    # alpha 4 (CIFAR) or 0.5 (Clothing1M); lambda_u 0, 25 or 150 (by noise rate and dataset).
    #: alpha of the Beta(alpha, alpha) MixUp draw.
    alpha: Annotated[float, Range(0, None, low_open=True), Tune(choices=(0.5, 4.0))] = 4.0
    #: lambda_u, the weight of the unlabeled loss (after its ramp); 0 = the Clothing1M recipe.
    lambda_u: Annotated[float, Range(0, None), Tune(choices=(0.0, 25.0, 150.0))] = 25.0
    #: Epochs over which lambda_u ramps up from 0 after the warm-up.
    rampup_epochs: Annotated[int, Range(0, None)] = 16
    #: h: the GMM fits the mean of the last h normalised loss vectors (the code: 5 at 90 % noise).
    loss_history: Annotated[int, Range(1, None)] = 1
    #: Add the negative entropy of the outputs to the warm-up CE (the code: asymmetric noise).
    confidence_penalty: bool = False
    #: Labeled (and unlabeled) batch size of the MixMatch steps; 0 = the run's batch size.
    labeled_batch: Annotated[int, Range(0, None)] = 0


class DivideMix(Method):
    """Two networks, co-divided by a loss mixture, trained with MixMatch on the peer's division."""

    name = "dividemix"
    summary = ("2 networks; a 2-component GMM on each one's losses divides the data; each trains on its peer's "
               "labeled set with MixMatch (co-refinement, co-guessing)")
    paper = "Li, Socher, Hoi, DivideMix: Learning with Noisy Labels as Semi-supervised Learning, ICLR 2020"
    HParams = DivideMixParams
    sample_score_name = "clean_probability"  # the peer's GMM probability that the label is clean
    deploys = "the sum of both networks' logits"
    single_member = "net1"
    needs_raw = True  # the second view of each labeled sample

    @classmethod
    def validate(cls, hp: DivideMixParams, settings: dict) -> None:
        epochs = int(settings.get("epochs", 0) or 0)
        if epochs and warmup_epochs(hp.warmup_epochs, epochs) >= epochs:
            raise ValueError(
                f"warmup_epochs = {warmup_epochs(hp.warmup_epochs, epochs)} leaves no DivideMix epoch of "
                f"{epochs}; set methods.dividemix.warmup_epochs below the number of epochs")

    @classmethod
    def canonical(cls, hp: DivideMixParams) -> DivideMixParams:
        import dataclasses

        if hp.lambda_u == 0:  # no unlabeled loss: its ramp has no effect
            hp = dataclasses.replace(hp, rampup_epochs=DivideMixParams.rampup_epochs)
        return hp

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net1 = ctx.backbone()
        self.net2 = ctx.backbone()
        self.optimizer1 = ctx.optimizer([self.net1])
        self.optimizer2 = ctx.optimizer([self.net2])
        self.warmup = warmup_epochs(self.hp.warmup_epochs, ctx.epochs)
        self.batch = self.hp.labeled_batch or ctx.batch_size
        #: The last normalised loss vectors of each network (only with loss_history > 1), checkpointed.
        self.history: list[list[Tensor]] = [[], []]
        self.probability: list[Tensor | None] = [None, None]
        self.labeled: list[Tensor] = []
        self.unlabeled: list[Tensor] = []

    # -- division --------------------------------------------------------------------------
    def division_probability(self, k: int, losses: Tensor) -> Tensor:
        """Network k's clean probabilities (float32, on the device) from its per-sample losses."""
        normalised = normalise_losses(losses)
        if normalised is None:
            normalised = torch.zeros_like(losses, dtype=torch.float64)
        values = normalised
        if self.hp.loss_history > 1:
            self.history[k] = (self.history[k] + [normalised.cpu()])[-self.hp.loss_history:]
            values = torch.stack(self.history[k]).mean(dim=0)
        if values.numel() < 2 or not bool(values.max() > values.min()):
            return torch.ones(losses.shape, device=self.ctx.device)
        return fit_gmm(values).clean_probability.to(device=self.ctx.device, dtype=torch.float32)

    def scan_losses(self) -> dict[str, Tensor]:
        """Per-sample CE of both networks over the training set (and net1's logits for the memorisation record)."""

        def fn(x: Tensor, index: Tensor, labels: Tensor) -> dict[str, Tensor]:
            z1, z2 = self.net1(x).float(), self.net2(x).float()
            return {"loss1": cross_entropy_per_sample(z1, labels), "loss2": cross_entropy_per_sample(z2, labels),
                    "logits": z1}

        return self.ctx.scan(fn)

    def divide(self, losses1: Tensor, losses2: Tensor) -> None:
        """Both networks' divisions from their per-sample losses."""
        self.set_division(self.division_probability(0, losses1), self.division_probability(1, losses2))

    def set_division(self, w1: Tensor, w2: Tensor) -> None:
        """Clean probabilities w_k and the labeled (w_k > tau) and unlabeled sets of network k's division."""
        self.probability = [w1, w2]
        self.labeled = [torch.nonzero(w > self.hp.tau).reshape(-1) for w in self.probability]
        self.unlabeled = [torch.nonzero(w <= self.hp.tau).reshape(-1) for w in self.probability]

    # -- epochs ----------------------------------------------------------------------------
    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        ctx = self.ctx
        self.view_gen = ctx.generator("dividemix-views")
        self.mix_gen = ctx.generator("dividemix-mix")
        self.beta = np.random.default_rng(derive_seed(ctx.seed, phase.name, epoch, "dividemix-beta"))
        self.segment_steps = {name: 0 for name in SEGMENTS}
        self.cursor: dict[str, tuple[Tensor, int]] = {}
        if epoch < self.warmup:
            return
        out = self.scan_losses()
        self.divide(out["loss1"], out["loss2"])
        self.unlabeled_gen = ctx.generator("dividemix-unlabeled")

    def epoch_plan(self, phase: Phase, epoch: int) -> list[Segment] | None:
        if epoch < self.warmup:
            return None
        size = self.hp.labeled_batch or None
        # Co-divide: each network trains on its peer's labeled set.
        return [Segment("net1", self.labeled[1], batch_size=size), Segment("net2", self.labeled[0], batch_size=size)]

    def on_epoch_end(self, phase: Phase, epoch: int) -> dict[str, float]:
        if epoch < self.warmup or not self.labeled:
            return {}
        n = max(1, self.ctx.train_size)
        return {"labeled_share": int(self.labeled[1].numel()) / n, "labeled_share_net2": int(self.labeled[0].numel()) / n}

    def next_unlabeled(self, segment: str, count: int) -> Tensor | None:
        """The next ``count`` indices of the peer's unlabeled set in a seeded order, restarted (reshuffled) when used up."""
        pool = self.unlabeled[1 if segment == "net1" else 0]
        if pool.numel() == 0:
            return None
        order, used = self.cursor.get(segment, (pool[:0], 0))
        taken: list[Tensor] = []
        need = count
        while need > 0:
            if used >= order.numel():
                order = pool[torch.randperm(pool.numel(), generator=self.unlabeled_gen, device=pool.device)]
                used = 0
            part = order[used : used + need]
            taken.append(part)
            used += part.numel()
            need -= part.numel()
        self.cursor[segment] = (order, used)
        return torch.cat(taken)

    # -- steps -----------------------------------------------------------------------------
    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        if epoch < self.warmup:
            return self.warmup_step(batch)
        if batch.segment not in SEGMENTS:
            raise RuntimeError(f"a DivideMix epoch trains in segments {SEGMENTS}, got a batch of {batch.segment!r}")
        return self.mixmatch_step(batch, batch.segment, epoch)

    def warmup_step(self, batch: Batch) -> dict[str, Tensor]:
        """CE on the batch for both networks (plus the negative entropy with ``confidence_penalty``)."""
        self.net1.train()
        self.net2.train()
        z1, z2 = self.net1(batch.x).float(), self.net2(batch.x).float()
        ce1, ce2 = F.cross_entropy(z1, batch.y), F.cross_entropy(z2, batch.y)
        loss = ce1 + ce2
        out = {"loss1": ce1.detach(), "loss2": ce2.detach()}
        if self.hp.confidence_penalty:
            penalty = negative_entropy(z1) + negative_entropy(z2)
            loss = loss + penalty
            out["penalty"] = penalty.detach()
        self.optimizer1.zero_grad(set_to_none=True)
        self.optimizer2.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer1.step()
        self.optimizer2.step()
        work = torch.full((), 2.0 * z1.shape[0], device=loss.device)  # both networks, forward and backward
        return {"loss": loss.detach(), **out, "logits": z1.detach(), "work": work}

    def mixmatch_step(self, batch: Batch, segment: str, epoch: int) -> dict[str, Tensor]:
        """One MixMatch step of the network of ``segment`` on its peer's division (module docstring)."""
        ctx, hp = self.ctx, self.hp
        first = segment == "net1"
        net, peer = (self.net1, self.net2) if first else (self.net2, self.net1)
        optimizer = self.optimizer1 if first else self.optimizer2
        peer_k = 1 if first else 0
        weights = self.probability[peer_k]
        assert weights is not None
        net.train()
        peer.eval()
        if batch.raw is None:
            raise RuntimeError("DivideMix needs batch.raw (needs_raw is set, so the engine gives it)")
        x = batch.x
        x2 = ctx.augment(batch.raw, ctx.augmentation, self.view_gen)
        rows = x.shape[0]
        u_index = self.next_unlabeled(segment, self.batch)
        with torch.no_grad():
            if u_index is not None:
                raw_u = ctx.fetch(u_index)
                u, u2 = ctx.augment(raw_u, ctx.augmentation, self.view_gen), ctx.augment(raw_u, ctx.augmentation,
                                                                                          self.view_gen)
                # Co-guessing, in the code's order (net's forwards update its BatchNorm statistics).
                q_u = co_guess([F.softmax(m(v).float(), dim=1) for m in (net, peer) for v in (u, u2)],
                               hp.temperature)
            z_x, z_x2 = net(x).float(), net(x2).float()
            onehot = F.one_hot(batch.y, ctx.num_classes).float()
            mean_x = (F.softmax(z_x, dim=1) + F.softmax(z_x2, dim=1)) / 2
            q_x = co_refine(onehot, weights[batch.index], mean_x, hp.temperature)
        lam = mix_weight(float(self.beta.beta(hp.alpha, hp.alpha)))
        if u_index is not None:
            inputs, targets = torch.cat([x, x2, u, u2]), torch.cat([q_x, q_x, q_u, q_u])
        else:  # no unlabeled samples: mixing among the labeled rows, L_u = 0
            inputs, targets = torch.cat([x, x2]), torch.cat([q_x, q_x])
        perm = torch.randperm(inputs.shape[0], generator=self.mix_gen, device=inputs.device)
        mixed_inputs, mixed_targets = mix(inputs, targets, lam, perm)
        logits = net(mixed_inputs).float()
        loss_x = labeled_loss(logits[: 2 * rows], mixed_targets[: 2 * rows])
        loss_u = unlabeled_loss(logits[2 * rows :], mixed_targets[2 * rows :])
        step = self.segment_steps[segment]
        self.segment_steps[segment] = step + 1
        labeled = int(self.labeled[peer_k].numel())
        weight_u = lambda_u(hp.lambda_u, epoch, step, iterations(labeled, self.batch), self.warmup,
                            hp.rampup_epochs)
        penalty = prior_penalty(logits)
        loss = loss_x + weight_u * loss_u + penalty
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(loss)
        optimizer.step()
        guessed = 0 if u_index is None else int(u_index.numel())
        # No-grad forwards (1/3 each): x, x' by the trained network, u, u' by both; then one
        # forward-backward of every mixed row.
        work = (2 * rows + 4 * guessed) / 3 + inputs.shape[0]
        out = {"loss": loss.detach(), "loss_x": loss_x.detach(), "loss_u": loss_u.detach(),
               "lambda_u": torch.full((), weight_u, device=loss.device), "penalty": penalty.detach(),
               "work": torch.full((), work, device=loss.device)}
        if first:
            out["logits"] = z_x.detach()
            out["selected"] = torch.ones(rows, dtype=torch.bool, device=loss.device)
            out["sample_score"] = weights[batch.index].float()
        return out

    # -- inference and state ---------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        return self.net1(x).float() + self.net2(x).float()

    def predict_members(self, x: Tensor, phase: Phase) -> dict[str, Tensor]:
        z1, z2 = self.net1(x).float(), self.net2(x).float()
        members = peer_members(z1, z2)
        members["model"] = z1 + z2
        return members

    def deployment(self) -> dict[str, Any]:
        last = self.phases()[-1].name
        return {"deploys": self.deploys, "single": f"{last}/{self.single_member}", "beside": {}}

    def extra_state(self) -> dict[str, Any]:
        if self.hp.loss_history <= 1:
            return {}
        return {"history": [torch.stack(h) if h else torch.zeros(0) for h in self.history]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("history")
        if saved is not None:
            self.history = [list(h.to(torch.float64).unbind(0)) if h.numel() else [] for h in saved]


@nlbench.hookimpl
def register_methods(register) -> None:
    register(DivideMix)
