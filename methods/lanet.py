"""LA-Net: Landmark-Aware Net, facial landmarks against label noise in expression recognition.

Wu, Cui, "LA-Net: Landmark-Aware Learning for Reliable Facial Expression Recognition under Label
Noise", ICCV 2023 (official code hw-tony/LA-Net; docs/methods.md, LA-Net; the design's Part D.1.1).

One timm ResNet is the expression path (stem and layer1 shared; layer2-4, pooling, fc): u = GAP(c4)
and logits z = fc(u). A landmark path copies layer2-4, joins them top-down with 1x1 laterals to 64
channels (bilinear resizing to each lateral's size, so any input size works) into P1 at stride 4:
19 heatmaps (a 1x1 conv) and the landmark feature v = GAP(P1). Per step, with P = softmax(z):

* label distribution estimation (LDE): a_i = 1/2 (W^u P + W^v P)_i aggregates the predictions of
  each sample's 8 cosine neighbours in expression and in landmark space, weighted by learned pair
  scores (neighbours without gradient, scores with); t_i = 0.9 b_i + 0.1 a_i, b_i <- t_i, where b
  is per-sample state started at the one-hot labels;
* landmark loss: Adaptive Wing on Gaussian target heatmaps (sigma 1.5) weighted 10/1;
* expression-landmark contrastive loss (EL): a supervised InfoNCE between expression queries and
  landmark keys (and the reverse) of an EMA key encoder (momentum 0.999), with a queue of 8192
  past keys; positives share a pseudo label (argmax t where max t >= 0.7, else the sample alone);

    L = CE(z, y) + 1 L_lm + 1 KL(t || P) + 0.1 L_el.

t keeps its gradient in the KL (the code; ``detach_target``). ``landmarks = "none"`` is the
ablation without landmarks (a_i = (W^u P)_i, no landmark loss, no EL): not LA-Net, for datasets
without landmarks. Deployable model: the expression ResNet alone, a plain timm network.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.context import uses_channels_last
from nlbench.landmarks import AFLW19
from nlbench.lib.lanet import (
    KeyQueue,
    aggregate,
    contrastive_loss,
    kl_to_prediction,
    landmark_loss,
    lde_targets,
    neighbours,
    pseudo_labels,
    target_heatmaps,
    unswap_flipped,
)
from nlbench.networks import copy_buffers, ema_update, frozen_copy
from nlbench.options import Range, Tune
from nlbench.seeding import derive_seed

LANDMARK_SOURCES = ("dataset", "none")
LANDMARK_FLIPS = ("swap", "code")
FIDELITIES = ("paper", "code")
#: Channels of the landmark path's top-down maps, and so the size of v.
WIDTH = 64
#: Output size of the projection heads g_u, g_v.
PROJECTION_DIM = 64
#: Forward-backward passes of one ResNet-18 per step: the query pass runs layer2-4 twice (68 % of
#: the multiply-adds at 224 px) plus laterals and head (1.5 %); the key forward without gradient
#: counts a third of that (design D.1.1 item 10).
QUERY_PASSES = 1.69
CONTRASTIVE_PASSES = round(QUERY_PASSES * 4 / 3, 2)  # 2.25


@dataclass
class LANetParams:
    """LA-Net hyperparameters (defaults: the official code's train.py, design Part D.1.1)."""

    # Search spaces around the code's values: the KL and EL weights over about a decade,
    # log-uniformly; the target momentum from fast to slow.
    #: "dataset" (the dataset's landmarks) or "none": the ablation without landmarks (expression
    #: neighbours only, no landmark loss, no EL), which is not LA-Net.
    landmarks: Literal[LANDMARK_SOURCES] = "dataset"
    #: Landmarks of flipped images: "swap" (left and right points swapped, as the mirrored face has
    #: them) or "code" (mirrored x, indices kept, as the official augmentation).
    landmark_flip: Literal[LANDMARK_FLIPS] = "swap"
    #: Stop the gradient of the LDE target t in the KL (the code keeps it: the KL also trains the
    #: pair scores and, through P, the neighbours' logits).
    detach_target: bool = False
    #: K, the neighbours per sample in each feature space (at most batch size - 1).
    neighbors: Annotated[int, Range(1, None)] = 8
    #: m, the momentum of the per-sample target: t = m b + (1 - m) a.
    lde_momentum: Annotated[float, Range(0, 1, high_open=True), Tune(0.7, 0.99)] = 0.9
    #: A sample's EL pseudo label is argmax t when max t reaches this, else its own label.
    confidence: Annotated[float, Range(0, 1)] = 0.7
    #: tau, the temperature of the EL loss.
    temperature: Annotated[float, Range(0, None, low_open=True)] = 0.1
    #: Q, the past keys of each space in the EL queue.
    queue_size: Annotated[int, Range(1, None)] = 8192
    #: Momentum of the EMA key encoder: k <- momentum k + (1 - momentum) q.
    ema_momentum: Annotated[float, Range(0, 1)] = 0.999
    #: Weight of the landmark (heatmap) loss.
    lambda_lm: Annotated[float, Range(0, None)] = 1.0
    #: Weight of KL(t || P).
    lambda_kl: Annotated[float, Range(0, None), Tune(0.3, 3.0, log=True)] = 1.0
    #: Weight of the EL loss.
    lambda_cl: Annotated[float, Range(0, None), Tune(0.02, 0.5, log=True)] = 0.1
    #: "paper" or "code": the code's landmark flip (indices kept), its -index pseudo label (class 0
    #: for the sample of index 0) and its heatmap centres (truncated, one cell late near the top
    #: and left edges).
    fidelity: Literal[FIDELITIES] = "paper"


# -- networks ------------------------------------------------------------------------------------
def stage_channels(backbone: nn.Module) -> tuple[int, ...]:
    """Output channels of layer1..layer4 of a timm ResNet (its ``feature_info``)."""
    by_module = {info["module"]: int(info["num_chs"]) for info in backbone.feature_info}
    return tuple(by_module[f"layer{k}"] for k in range(1, 5))


def stem(net: nn.Module, x: Tensor) -> Tensor:
    """c1, the layer1 map both paths start from."""
    return net.layer1(net.maxpool(net.act1(net.bn1(net.conv1(x)))))


def expression_features(net: nn.Module, c1: Tensor) -> Tensor:
    """u = GAP(layer4(layer3(layer2(c1)))): the expression feature fc classifies."""
    return net.global_pool(net.layer4(net.layer3(net.layer2(c1))))


def resize_to(maps: Tensor, like: Tensor) -> Tensor:
    """``maps`` resized bilinearly to ``like``'s height and width (x2 whenever the sizes halve)."""
    return F.interpolate(maps, size=like.shape[-2:], mode="bilinear", align_corners=False)


class LandmarkBranch(nn.Module):
    """The landmark path: copies of the backbone's layer2-4 and the top-down sums of four laterals.

    P4 = lat4(c4'), P3 = up(P4) + lat3(c3'), P2 = up(P3) + lat2(c2'), P1 = up(P2) + lat1(c1).
    """

    def __init__(self, backbone: nn.Module, width: int = WIDTH) -> None:
        super().__init__()
        # Copies, so a pretrained file initialises both paths alike (the code loads both).
        self.layer2 = copy.deepcopy(backbone.layer2)
        self.layer3 = copy.deepcopy(backbone.layer3)
        self.layer4 = copy.deepcopy(backbone.layer4)
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1, bias=False) for c in stage_channels(backbone))

    def forward(self, c1: Tensor) -> Tensor:
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        maps = (c1, c2, c3, self.layer4(c3))
        top = self.lateral[3](maps[3])
        for level in (2, 1, 0):
            top = resize_to(top, maps[level]) + self.lateral[level](maps[level])
        return top


class PairScore(nn.Module):
    """The LDE pair score c_ij = softmax(MLP([h_i^(1), h_j^(2)]))_0 with h = Linear(d, d)(f) cut in
    halves and MLP = d -> d/2 -> ReLU -> d/4 -> ReLU -> 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim // 4), nn.ReLU(),
                                 nn.Linear(dim // 4, 2))

    def forward(self, features: Tensor, index: Tensor) -> Tensor:
        """Scores (B x k) of each sample i with its neighbours ``index`` (B x k): only those pairs."""
        h = self.embed(features)
        half = h.shape[1] // 2
        own = h[:, :half].unsqueeze(1).expand(-1, index.shape[1], -1)
        pairs = torch.cat([own, h[:, half:][index]], dim=-1)
        return self.mlp(pairs).float().softmax(dim=-1)[..., 0]


def projection(dim: int) -> nn.Sequential:
    """A projection head of the EL loss: Linear(dim, 64) -> ReLU -> Linear(64, 64)."""
    return nn.Sequential(nn.Linear(dim, PROJECTION_DIM), nn.ReLU(), nn.Linear(PROJECTION_DIM, PROJECTION_DIM))


class LANetAux(nn.Module):
    """What only training uses: the landmark path and heatmap head, the LDE pair scores and the EL
    projections (absent parts are None: the ablation has no landmark path, EL no projections)."""

    def __init__(self, backbone: nn.Module, num_landmarks: int, landmarks: bool, contrastive: bool) -> None:
        super().__init__()
        dim = int(backbone.num_features)
        self.score_u = PairScore(dim)
        self.branch = LandmarkBranch(backbone) if landmarks else None
        self.heatmap = nn.Conv2d(WIDTH, num_landmarks, 1, bias=False) if landmarks else None
        self.score_v = PairScore(WIDTH) if landmarks else None
        self.project_u = projection(dim) if contrastive else None
        self.project_v = projection(WIDTH) if contrastive else None


class QueryForward(nn.Module):
    """One training forward of the query network: logits z, u, and (with landmarks) v and the heatmaps.

    Kept out of the method's attributes (it holds the method's networks; checkpoints save those)."""

    def __init__(self, net: nn.Module, aux: LANetAux) -> None:
        super().__init__()
        self.net, self.aux = net, aux

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        c1 = stem(self.net, x)
        u = expression_features(self.net, c1)
        z = self.net.fc(u)
        if self.aux.branch is None:
            return z, u, None, None
        p1 = self.aux.branch(c1)
        return z, u, p1.mean(dim=(2, 3)), self.aux.heatmap(p1)


class KeyEncoder(nn.Module):
    """The EMA key encoder of the EL loss: copies of the trunk, both paths and g_u, g_v (not fc, not
    the heatmap head, not the pair scores, which keys never use)."""

    def __init__(self, net: nn.Module, aux: LANetAux) -> None:
        super().__init__()
        self.net = frozen_copy(net)
        self.net.fc = nn.Identity()  # named like the source's: the EMA matches parameters by name
        self.branch = frozen_copy(aux.branch)
        self.project_u = frozen_copy(aux.project_u)
        self.project_v = frozen_copy(aux.project_v)

    def follow(self, net: nn.Module, aux: LANetAux, momentum: float) -> None:
        """k <- m k + (1 - m) q for every parameter; buffers (BatchNorm statistics) copied from the query."""
        for mine, source in ((self.net, net), (self.branch, aux.branch), (self.project_u, aux.project_u),
                             (self.project_v, aux.project_v)):
            ema_update(mine, source, momentum)
            copy_buffers(mine, source)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Unit keys (k_u, k_v) of a batch."""
        c1 = stem(self.net, x)
        u = expression_features(self.net, c1)
        v = self.branch(c1).mean(dim=(2, 3))
        return F.normalize(self.project_u(u).float(), dim=1), F.normalize(self.project_v(v).float(), dim=1)


# -- the method ----------------------------------------------------------------------------------
class LANet(Method):
    """One expression network trained with neighbourhood-aggregated label distributions, a landmark
    heatmap task and an expression-landmark contrastive loss."""

    name = "lanet"
    summary = ("landmark-aware LDE targets (neighbours in expression and landmark space) + heatmap loss + "
               "expression-landmark contrastive loss")
    paper = ("Wu and Cui, LA-Net: Landmark-Aware Learning for Reliable Facial Expression Recognition under "
             "Label Noise, ICCV 2023")
    HParams = LANetParams
    sample_score_name = "target_mass"  # t_{i, y_i}: the LDE target's mass on the given label
    deploys = "the expression network (the landmark path, heads and key encoder only train)"
    passes_per_step = CONTRASTIVE_PASSES

    def __init__(self, hp: LANetParams | None = None) -> None:
        super().__init__(hp)
        landmarks = self.hp.landmarks == "dataset"
        self.needs_landmarks = landmarks
        self.contrastive = landmarks and self.hp.lambda_cl > 0
        self.passes_per_step = CONTRASTIVE_PASSES if self.contrastive else QUERY_PASSES if landmarks else 1.0
        if not landmarks:  # not LA-Net: every table names the ablation in its row
            self.variant_settings = ("landmarks",)

    def deployment(self) -> dict:
        out = super().deployment()
        if not self.needs_landmarks:
            out["deploys"] = "the expression network (ablation without landmarks: its pair-score head only trains)"
        return out

    @classmethod
    def validate(cls, hp: LANetParams, settings: dict) -> None:
        if hp.landmarks == "dataset":
            if not settings.get("has_landmarks", False):
                raise ValueError(
                    f"LA-Net trains on facial landmarks and dataset {settings.get('dataset') or '?'!r} has none; "
                    "give a dataset with landmarks, or run the ablation without them (expression neighbours "
                    "only, not LA-Net) with --set methods.lanet.landmarks=\"none\"")
            scheme = settings.get("landmark_scheme")
            if scheme is not None and scheme != AFLW19.name:
                raise ValueError(f"LA-Net's heatmap head is built for the {AFLW19.name} landmarks; dataset "
                                 f"{settings.get('dataset')!r} has {scheme!r}")

    @classmethod
    def canonical(cls, hp: LANetParams) -> LANetParams:
        landmarks = hp.landmarks == "dataset"
        contrastive = landmarks and hp.lambda_cl > 0
        unused = []
        if not landmarks:
            unused += ["lambda_lm", "lambda_cl"]
        if not contrastive:
            unused += ["temperature", "queue_size", "ema_momentum", "confidence"]
        if not (landmarks and (hp.lambda_lm > 0 or contrastive)):
            unused.append("fidelity")  # heatmap centres and pseudo labels unused
        if not (landmarks and hp.lambda_lm > 0) or hp.fidelity == "code":
            unused.append("landmark_flip")  # no heatmaps, or the code's flip anyway
        if hp.lambda_kl == 0:
            unused.append("detach_target")
        defaults = LANetParams()
        return dataclasses.replace(hp, **{name: getattr(defaults, name) for name in unused})

    def build(self, ctx) -> None:
        super().build(ctx)
        net = ctx.backbone()
        if not all(hasattr(net, name) for name in ("layer4", "fc", "global_pool", "feature_info")):
            raise ValueError(f"LA-Net needs a timm ResNet backbone (layer1..layer4, fc); {ctx.settings.backbone!r} "
                             "is not one")
        landmarks = self.hp.landmarks == "dataset"
        with torch.random.fork_rng(devices=[]):
            # Their own seed: the new modules' initialisation does not depend on what ran before.
            torch.manual_seed(derive_seed(ctx.seed, "lanet-heads"))
            aux = LANetAux(net, len(AFLW19.points), landmarks, self.contrastive).to(ctx.device)
        if uses_channels_last(ctx.settings, ctx.device):
            aux = aux.to(memory_format=torch.channels_last)
        self.net, self.aux = net, aux
        self.optimizer = ctx.optimizer([self.net, self.aux])  # fc: classifier lr; the rest: backbone lr
        self.targets = ctx.sample_state("lanet_targets", (ctx.num_classes,))
        self.targets.data.copy_(F.one_hot(ctx.labels.current, ctx.num_classes).float())
        self.keys: KeyEncoder | None = None
        self.queue: KeyQueue | None = None
        if self.contrastive:
            self.keys = ctx.compile(KeyEncoder(net, aux))
            queue_gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "lanet-queue"))
            self.queue = KeyQueue(self.hp.queue_size, PROJECTION_DIM, ctx.device, queue_gen)
        self._forward = {"query": ctx.compile(QueryForward(net, aux))}

    def trained_networks(self, phase: Phase) -> int:
        """One network with a second path (its extra work is in ``passes_per_step``)."""
        return 1

    # -- the terms of a step ---------------------------------------------------------------------
    def lde(self, u: Tensor, v: Tensor | None, probs: Tensor, index: Tensor) -> Tensor:
        """The targets t (B x K, with gradient) of the batch; the per-sample state b takes them."""
        k = min(self.hp.neighbors, probs.shape[0] - 1)
        nearest = neighbours(u, k)
        aggregated = aggregate(probs, nearest, self.aux.score_u(u, nearest))
        if v is not None:
            nearest = neighbours(v, k)
            aggregated = 0.5 * (aggregated + aggregate(probs, nearest, self.aux.score_v(v, nearest)))
        targets = lde_targets(self.targets.data[index], aggregated, self.hp.lde_momentum)
        self.targets.update(index, targets.detach())  # a repeated sample: its last row wins
        return targets

    def landmark_points(self, batch: Batch) -> Tensor:
        """batch.landmarks, with the code's flip (indices kept) when asked for."""
        points = batch.landmarks
        if points is None:
            raise RuntimeError("LA-Net needs batch.landmarks (needs_landmarks is set, so the engine gives them)")
        if self.hp.fidelity == "code" or self.hp.landmark_flip == "code":
            flipped = batch.flipped
            if flipped is None:
                raise RuntimeError("LA-Net's code flip needs batch.flipped (each sample's flip) from the engine")
            points = unswap_flipped(points, flipped, AFLW19.flip)
        return points

    def heatmap_loss(self, batch: Batch, heat: Tensor) -> Tensor:
        """L_lm of the predicted heatmaps against the targets of the batch's landmarks."""
        points = self.landmark_points(batch)
        if points.shape[1] != heat.shape[1]:
            raise ValueError(f"LA-Net's heatmap head predicts {heat.shape[1]} landmarks, the batch has {points.shape[1]}")
        height, width = heat.shape[-2:]
        stride = (batch.x.shape[-1] / width, batch.x.shape[-2] / height)
        target, weights = target_heatmaps(points, height, width, stride, code=self.hp.fidelity == "code")
        return landmark_loss(heat, target, weights)

    def contrastive_loss(self, u: Tensor, v: Tensor, keys: tuple[Tensor, Tensor], labels: Tensor) -> Tensor:
        """L_el = L(q_u, k_v, queue_v) + L(q_v, k_u, queue_u)."""
        assert self.queue is not None
        q_u = F.normalize(self.aux.project_u(u), dim=1)
        q_v = F.normalize(self.aux.project_v(v), dim=1)
        tau, queue = self.hp.temperature, self.queue
        return (contrastive_loss(q_u, keys[1], queue.keys_v, queue.labels, labels, tau)
                + contrastive_loss(q_v, keys[0], queue.keys_u, queue.labels, labels, tau))

    @torch.no_grad()
    def key_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The EMA step of the key encoder, then its unit keys of the same augmented batch."""
        assert self.keys is not None
        self.keys.follow(self.net, self.aux, self.hp.ema_momentum)
        return self.keys(x)

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        z, u, v, heat = self._forward["query"](batch.x)
        keys = self.key_forward(batch.x) if self.contrastive else None
        # Targets, scores, projections and losses in float32 (bf16 autocast covers the two forwards).
        with torch.autocast(device_type=batch.x.device.type, enabled=False):
            logits, u = z.float(), u.float()
            v = v.float() if v is not None else None
            targets = self.lde(u, v, logits.softmax(dim=1), batch.index)
            terms = {"loss_ce": F.cross_entropy(logits, batch.y),
                     "loss_kl": kl_to_prediction(targets.detach() if self.hp.detach_target else targets, logits)}
            loss = terms["loss_ce"] + self.hp.lambda_kl * terms["loss_kl"]
            if heat is not None:
                terms["loss_lm"] = self.heatmap_loss(batch, heat)
                loss = loss + self.hp.lambda_lm * terms["loss_lm"]
            if keys is not None:
                labels = pseudo_labels(targets, batch.index, self.hp.confidence, code=self.hp.fidelity == "code")
                terms["loss_el"] = self.contrastive_loss(u, v, keys, labels)
                loss = loss + self.hp.lambda_cl * terms["loss_el"]
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        if keys is not None:
            self.queue.push(*keys, labels)
        targets = targets.detach()
        return {"loss": loss.detach(), **{key: value.detach() for key, value in terms.items()},
                "logits": logits.detach(), "sample_score": targets.gather(1, batch.y.unsqueeze(1)).squeeze(1),
                "confident_share": (targets.max(dim=1).values >= self.hp.confidence).float().mean()}

    # -- inference and state ---------------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)  # the expression path: a plain timm ResNet

    def deployable_state(self) -> dict:
        """The expression network alone (timm ResNet keys, loadable as a pretrained file)."""
        return {"net": self.net.state_dict()}

    def extra_state(self) -> dict:
        return {"queue": self.queue.state_dict()} if self.queue is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.queue is not None and "queue" in state:
            self.queue.load_state_dict(state["queue"])


@nlbench.hookimpl
def register_methods(register) -> None:
    register(LANet)
