"""DMUE: latent Distribution Mining and pairwise Uncertainty Estimation, a multi-branch network.

She, Hu, Shi, Wang, Shen, Mei, "Dive into Ambiguity: Latent Distribution Mining and Pairwise
Uncertainty Estimation for Facial Expression Recognition", CVPR 2021 (docs/methods.md, DMUE; the
design's Part D.1.4). Official code: JDAI-CV/FaceX-Zoo, ``addition_module/DMUE``.

One timm ResNet trunk (stem to layer3) feeds K + 1 copies of its layer4: K auxiliary branches and
the target branch. Each branch: global average pooling, dropout, a shared BatchNorm1d neck (bias
fixed at 0), a bias-free linear classifier (N(0, 0.001^2)). With x3 the trunk's maps:

* auxiliary branch c learns the K - 1 other classes on the samples not labelled c
  (L_aux: CE averaged over the branches);
* the same branch, run on the samples labelled c (no dropout, no gradient), gives their latent
  label distribution: its softmax sharpened with T = 1.2, 0 at class c;
* the target branch's logits z are pulled towards it on the non-label classes (L_soft), its
  features h = neck(dropout(f)) keep the pairwise similarities of each branch's logits (L_sp);
* pairwise uncertainty: s_i = sigmoid(U([min-max scaled mean cosine of f_i to each class's samples,
  one-hot(y_i)])), U = Linear(2K, K) -> PReLU -> Linear(K, 1), and the target's CE is on s_i z_i.

    L = r_up(e) [CE(s z, y) + 0.5 L_soft + 1000 L_sp] + r_down(e) L_aux,

r_up rising to 1 and r_down falling from 1 at epoch a = max(1, round(E/6)). BatchNorm1d needs two
samples: a class with fewer than 2 samples in the batch gets no latent-distribution pass (its rows
leave L_soft) and a branch with fewer than 2 samples is left out of L_aux and L_sp (the code skips
such batches instead; ``fidelity = "code"``). Deployable model: trunk, target layer4, neck and
classifier (``self.net``); the auxiliary branches and U (``self.aux``) are for training only.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.lib.dmue import (
    batch_has_every_class_twice,
    branch_members,
    ramp_down,
    ramp_epochs,
    ramp_up,
    scaled_cross_entropy,
    soft_loss,
    soft_targets,
    sp_loss,
    total_loss,
    uncertainty_inputs,
)
from nlbench.options import Range, Tune
from nlbench.seeding import derive_seed

FIDELITIES = ("paper", "code")
#: Share of ResNet-18's forward multiply-adds in layer4 at 224 px (411 of 1813 M): the unit of
#: DMUE's extra branch passes in its cost.
LAYER4_SHARE = 0.2266
#: The smallest sub-batch a BatchNorm layer normalises in train mode.
MIN_ROWS = 2
#: Below this share of the training set a class rarely reaches 2 samples per batch without
#: class-balanced sampling (the design's warning threshold).
SMALL_CLASS_SHARE = 0.02


def step_passes(num_classes: int) -> float:
    """Forward-backward passes of one ResNet per step: the trunk once, K layer4 passes with a
    gradient (K - 1 auxiliary ones and the target) and one without (the latent distribution, 1/3)."""
    return round((1 - LAYER4_SHARE) + num_classes * LAYER4_SHARE + LAYER4_SHARE / 3, 2)


@dataclass
class DMUEParams:
    """DMUE hyperparameters (defaults: the official code's config.py, docs/methods.md DMUE)."""

    # Search spaces around the code's values (the paper's ablations are not recorded here): w and
    # gamma over a decade or more each way, log-uniformly; T from none (1) to strong sharpening.
    #: w, the weight of the soft-label loss L_soft.
    soft_weight: Annotated[float, Range(0, None), Tune(0.1, 2.0, log=True)] = 0.5
    #: gamma, the weight of the similarity-preserving loss L_sp.
    sp_weight: Annotated[float, Range(0, None), Tune(100.0, 10000.0, log=True)] = 1000.0
    #: T, the sharpening temperature of the latent label distributions (p^(1/T), renormalised).
    temperature: Annotated[float, Range(0, None, low_open=True), Tune(1.0, 2.0)] = 1.2
    #: a, the epoch where r_up reaches 1 and r_down starts to fall; 0 = max(1, round(epochs / 6))
    #: (the code sets it per dataset: AffectNet 6 of 36 epochs, RAF-DB 9-10, FERPlus 10-14).
    ramp_epochs: Annotated[int, Range(0, None)] = 0
    #: Dropout before the neck of the target and auxiliary branches.
    dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.5
    #: "paper" (the uncertainty head and the neck trained; small classes masked per class) or
    #: "code" (both frozen, as the code's optimiser leaves them out; batches in which a class has
    #: fewer than 2 samples are skipped, as the code's check_batch).
    fidelity: Literal[FIDELITIES] = "paper"


def pooled(maps: Tensor) -> Tensor:
    """Global average pooling of B x C x h x w maps to B x C."""
    return maps.mean(dim=(2, 3))


def classifier(features: int, outputs: int) -> nn.Linear:
    """A bias-free linear classifier with weights N(0, 0.001^2) (the code's initialisation)."""
    linear = nn.Linear(features, outputs, bias=False)
    nn.init.normal_(linear.weight, std=0.001)
    return linear


class DMUENet(nn.Module):
    """The deployable network: a timm ResNet's stem to layer3 (the trunk), the target layer4, GAP,
    dropout, the BatchNorm1d neck shared with the auxiliary branches, and a bias-free classifier.

    The timm blocks keep their names (``layer4`` is the target branch, where Grad-CAM looks)."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(backbone, name))
        features = int(backbone.num_features)
        self.dropout = nn.Dropout(dropout)
        self.neck = nn.BatchNorm1d(features)
        self.neck.bias.requires_grad_(False)  # a scale-only neck, as the code's
        self.fc = classifier(features, num_classes)

    def get_classifier(self) -> nn.Module:
        """Classifier and neck: the classifier lr (the neck's fixed bias is never optimised)."""
        return nn.ModuleList([self.fc, self.neck])

    def trunk(self, x: Tensor) -> Tensor:
        """The layer3 maps x3 every branch starts from."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def embed(self, features: Tensor) -> Tensor:
        """h = neck(dropout(f)): what the classifier sees (dropout only in train mode)."""
        return self.neck(self.dropout(features))

    def forward(self, x: Tensor) -> Tensor:
        """Logits z of the target branch."""
        return self.fc(self.embed(pooled(self.layer4(self.trunk(x)))))


class DMUEAux(nn.Module):
    """What only training uses: K auxiliary copies of layer4 with (K - 1)-way classifiers, and the
    uncertainty head U = Linear(2K, K) -> PReLU -> Linear(K, 1)."""

    def __init__(self, layer4: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(copy.deepcopy(layer4) for _ in range(num_classes))
        self.heads = nn.ModuleList(classifier(features, num_classes - 1) for _ in range(num_classes))
        self.uncertainty = nn.Sequential(nn.Linear(2 * num_classes, num_classes), nn.PReLU(),
                                         nn.Linear(num_classes, 1))

    def get_classifier(self) -> nn.Module:
        """The auxiliary classifiers and U: the classifier lr (the branches take the backbone lr)."""
        return nn.ModuleList([self.heads, self.uncertainty])


class DMUE(Method):
    """A multi-branch network: auxiliary branches mine latent label distributions, a pairwise
    uncertainty score scales the target branch's logits."""

    name = "dmue"
    summary = ("K auxiliary layer4 branches (each without one class) give soft labels and similarity targets; "
               "pairwise-similarity uncertainty scales the target logits")
    paper = ("She et al., Dive into Ambiguity: Latent Distribution Mining and Pairwise Uncertainty Estimation "
             "for Facial Expression Recognition, CVPR 2021")
    HParams = DMUEParams
    sample_score_name = "confidence"  # s_i, the uncertainty head's scale of the sample's logits (1 = sure)
    deploys = "the target branch (trunk, target layer4, neck, classifier)"
    passes_per_step = step_passes(7)  # 2.44 for K = 7; build sets the run's own

    @classmethod
    def validate(cls, hp: DMUEParams, settings: dict) -> None:
        classes = int(settings.get("num_classes") or 2)  # a caller that does not know K: K >= 2
        if int(settings.get("batch_size", 2 * classes)) < 2 * classes:
            raise ValueError(f"DMUE needs train.batch_size >= 2 x the {classes} classes (every class twice in a "
                             f"batch for the per-class BatchNorm); got {settings.get('batch_size')}")

    def build(self, ctx) -> None:
        super().build(ctx)
        backbone = ctx.backbone()
        if not all(hasattr(backbone, name) for name in ("layer3", "layer4", "num_features")):
            raise ValueError(f"DMUE needs a ResNet backbone (layer1..layer4); {ctx.settings.backbone!r} has none")
        with torch.random.fork_rng(devices=[]):
            # Their own seed: the heads' initialisation does not depend on what ran before.
            torch.manual_seed(derive_seed(ctx.seed, "dmue-heads"))
            net = DMUENet(backbone, ctx.num_classes, self.hp.dropout)
            aux = DMUEAux(net.layer4, int(backbone.num_features), ctx.num_classes)
        self.net = ctx.compile(net.to(ctx.device))
        self.aux = aux.to(ctx.device)
        if self.hp.fidelity == "code":  # the code's Adam holds neither U nor the neck (§6 #70)
            self.aux.uncertainty.requires_grad_(False)
            self.net.neck.weight.requires_grad_(False)
        self.optimizer = ctx.optimizer([self.net, self.aux])
        self.ramp = ramp_epochs(self.hp.ramp_epochs, ctx.epochs)
        self.set_ramps(0)
        self.passes_per_step = step_passes(ctx.num_classes)
        self.warn_small_classes(ctx)

    @staticmethod
    def warn_small_classes(ctx) -> None:
        """Warn once when, without class-balanced sampling, a class is under 2 % of the training set:
        its batches then rarely hold it twice, and its samples rarely get a latent distribution."""
        counts = torch.bincount(ctx.labels.given, minlength=ctx.num_classes)
        smallest = int(counts.min())
        if not ctx.settings.balanced_sampling and smallest < SMALL_CLASS_SHARE * ctx.train_size:
            warnings.warn(f"DMUE: a class has {smallest} of {ctx.train_size} training samples and "
                          "train.balanced_sampling is off; few batches hold it twice (see small_classes)",
                          stacklevel=2)

    def trained_networks(self, phase: Phase) -> int:
        """One multi-branch network (its extra branch passes are in ``passes_per_step``)."""
        return 1

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        self.set_ramps(epoch)

    def set_ramps(self, epoch: int) -> None:
        """r_up(e) and r_down(e) of the epoch, as numbers for the loss and tensors for the outputs."""
        self.up, self.down = ramp_up(epoch, self.ramp), ramp_down(epoch, self.ramp)
        device = self.ctx.device
        self.ramps = {"ramp_up": torch.tensor(self.up, device=device),
                      "ramp_down": torch.tensor(self.down, device=device)}

    # -- the forward pass of a training step ---------------------------------------------------
    def auxiliary(self, x3: Tensor, labels: Tensor, counts: list[int], target: Tensor) -> dict[str, Tensor]:
        """L_aux and L_sp, each averaged over the auxiliary branches that have at least 2 samples
        (``target``: the target branch's h = neck(dropout(f)) of the whole batch)."""
        ce, sp = [], []
        for c, branch in enumerate(self.aux.branches):
            if labels.numel() - counts[c] < MIN_ROWS:
                continue
            rows, targets = branch_members(labels, c)
            logits = self.aux.heads[c](self.net.embed(pooled(branch(x3[rows])))).float()
            ce.append(F.cross_entropy(logits, targets))
            sp.append(sp_loss(logits, target[rows]))
        zero = target.new_zeros(())
        return {"loss_aux": torch.stack(ce).mean() if ce else zero,
                "loss_sp": torch.stack(sp).mean() if sp else zero}

    def latent_distributions(self, x3: Tensor, labels: Tensor, counts: list[int]) -> tuple[Tensor, Tensor]:
        """(targets, rows): each sample's soft label (B x K) from the auxiliary branch that never saw
        its class, and the mask of the samples that have one (their class has at least 2 samples)."""
        num_classes = len(counts)
        targets = x3.new_zeros(labels.numel(), num_classes, dtype=torch.float32)
        rows = torch.zeros_like(labels, dtype=torch.bool)
        # The soft labels are targets: no gradient reaches the branches through them (the code detaches).
        with torch.no_grad():
            for c, branch in enumerate(self.aux.branches):
                if counts[c] < MIN_ROWS:
                    continue
                members = (labels == c).nonzero().squeeze(1)
                logits = self.aux.heads[c](self.net.neck(pooled(branch(x3[members]))))  # no dropout
                targets[members] = soft_targets(logits, c, self.hp.temperature)
                rows[members] = True
        return targets, rows

    def losses(self, x: Tensor, labels: Tensor, counts: list[int]) -> dict[str, Tensor]:
        """Every loss term, the total, the target logits z and the scores s of one batch (a forward pass)."""
        x3 = self.net.trunk(x)
        features = pooled(self.net.layer4(x3))
        embedded = self.net.embed(features)
        logits = self.net.fc(embedded).float()
        terms = self.auxiliary(x3, labels, counts, embedded)
        soft, rows = self.latent_distributions(x3, labels, counts)
        # Cosines of the features before dropout; gradients reach f through s, as in the code.
        scores = torch.sigmoid(self.aux.uncertainty(uncertainty_inputs(features, labels, len(counts))).float())
        scores = scores.squeeze(1)
        terms["loss_ce"] = scaled_cross_entropy(logits, scores, labels)
        terms["loss_soft"] = soft_loss(logits, labels, soft, rows)
        terms["loss"] = total_loss(terms["loss_ce"], terms["loss_soft"], terms["loss_sp"], terms["loss_aux"],
                                   self.up, self.down, self.hp.soft_weight, self.hp.sp_weight)
        return {**terms, "logits": logits, "scores": scores}

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        labels = batch.y
        counts = torch.bincount(labels, minlength=self.ctx.num_classes).tolist()  # sub-batch sizes (one sync)
        small = torch.tensor(float(sum(n < MIN_ROWS for n in counts)), device=labels.device)
        if labels.numel() < MIN_ROWS or (self.hp.fidelity == "code" and not batch_has_every_class_twice(counts)):
            # Nothing to normalise (a last batch of one), or the code's check_batch: the step is
            # skipped; its loss of 0 enters the epoch's mean, skipped_batch is the share skipped.
            zero = torch.zeros((), device=labels.device)
            return {"loss": zero, "skipped_batch": zero + 1, "small_classes": small}
        terms = self.losses(batch.x, labels, counts)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(terms["loss"])
        self.optimizer.step()
        out = {key: terms[key].detach() for key in ("loss", "loss_ce", "loss_soft", "loss_sp", "loss_aux")}
        return {**out, **self.ramps, "logits": terms["logits"].detach(), "sample_score": terms["scores"].detach(),
                "skipped_batch": torch.zeros((), device=labels.device), "small_classes": small}

    # -- inference -----------------------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)

    def deployable_state(self) -> dict:
        """The target path only: trunk, target layer4, neck and classifier (the code's convert_weights)."""
        return {"net": self.net.state_dict()}


@nlbench.hookimpl
def register_methods(register) -> None:
    register(DMUE)
