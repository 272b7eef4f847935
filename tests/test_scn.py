"""SCN: attention-scaled logits, rank regularisation (and its batch-scaled margin), relabelling."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.lib.selection import scn_margin
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context

SCN = get_registry().method("scn")
SCNNet = sys.modules[SCN.__module__].SCNNet
PHASE = Phase("train", 20)


class FeatureBackbone(nn.Module):
    """A stand-in for a timm backbone whose pooled feature is its input (2-d)."""

    num_features = 2

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(2, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_logits_are_scaled_by_the_attention_weight() -> None:
    backbone = FeatureBackbone()
    attention = nn.Linear(2, 1)
    with torch.no_grad():
        backbone.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        backbone.fc.bias.zero_()
        attention.weight.copy_(torch.tensor([[0.5, -0.25]]))
        attention.bias.zero_()
    logits, importance = SCNNet(backbone, attention)(torch.tensor([[1.0, 2.0], [2.0, 0.0]]))
    # Sample 1: W x = (1, 2, 3), w.x = 0 -> a = 0.5. Sample 2: W x = (2, 0, 2), w.x = 1 -> a = sigmoid(1).
    assert importance.tolist() == pytest.approx([0.5, sigmoid(1.0)])
    assert logits[0].tolist() == pytest.approx([0.5, 1.0, 1.5])
    assert logits[1].tolist() == pytest.approx([2 * sigmoid(1.0), 0.0, 2 * sigmoid(1.0)])


def test_attention_head_is_trained_with_the_classifier_lr() -> None:
    ctx = stub_context(networks=lambda num_classes=None: FeatureBackbone(num_classes or 3))
    method = SCN(SCN.HParams())
    method.build(ctx)
    lr_of = {id(p): g["lr"] for g in method.optimizer.param_groups for p in g["params"]}
    for param in list(method.net.attention.parameters()) + list(method.net.backbone.fc.parameters()):
        assert lr_of[id(param)] == ctx.settings.classifier_lr


def test_rank_regularisation_hinge() -> None:
    importance = torch.tensor([0.55, 0.5, 0.45, 0.5], requires_grad=True)
    # M = floor(0.7 * 4) = 2: high = {0.55, 0.5} (mean 0.525), low = {0.5, 0.45} (mean 0.475): gap 0.05.
    loss = SCN.rank_regularisation(importance, beta=0.7, margin=0.15)
    assert loss.item() == pytest.approx(0.10)
    loss.backward()
    assert sorted(importance.grad.tolist()) == pytest.approx([-0.5, -0.5, 0.5, 0.5])
    wide = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    # M = 7: means 0.6 and 0.35 / 3; the gap 0.483 exceeds the margin -> 0.
    assert SCN.rank_regularisation(wide, 0.7, 0.15).item() == 0.0
    assert SCN.rank_regularisation(torch.tensor([0.3]), 0.7, 0.15).item() == 0.0  # one group would be empty


def test_margin_scales_with_the_batch_size() -> None:
    assert scn_margin(32) == 0.07 and scn_margin(64) == 0.07
    assert scn_margin(512) == 0.15 and scn_margin(1024) == 0.15
    assert scn_margin(288) == pytest.approx(0.07 + 0.08 * 224 / 448)  # halfway: 0.11
    method = SCN(SCN.HParams())
    method.build(stub_context(batch_size=256, networks=lambda num_classes=None: FeatureBackbone()))
    assert method.margin == pytest.approx(0.07 + 0.08 * 192 / 448)
    fixed = SCN(SCN.HParams(margin=0.15))
    fixed.build(stub_context(batch_size=256, networks=lambda num_classes=None: FeatureBackbone()))
    assert fixed.margin == 0.15


def test_relabel_rule_low_group_by_default_all_with_the_code_option() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 0, 0])
    # Gaps max - given: 0.5, 0.1, 0.7, 0.0 -> samples 0 and 2 exceed delta_2 = 0.2.
    everyone = SCN.relabel_mask(probs.log(), labels, 0.2)
    assert everyone.tolist() == [True, False, True, False]
    # beta = 0.5: the high group is the top 2 importances (samples 1 and 2); the low group 0 and 3.
    low = SCN.low_group(torch.tensor([0.1, 0.9, 0.8, 0.2]), 0.5)
    assert low.tolist() == [True, False, False, True]
    assert SCN.relabel_mask(probs.log(), labels, 0.2, low).tolist() == [True, False, False, False]


def test_relabel_epoch_rule() -> None:
    assert SCN.auto_relabel_epoch(200) == 10
    assert SCN.auto_relabel_epoch(95) == 10
    assert SCN.auto_relabel_epoch(40) == 10
    assert SCN.auto_relabel_epoch(10) == 10
    assert SCN.auto_relabel_epoch(9) == 1
    assert SCN.auto_relabel_epoch(5) == 1
    assert SCN.auto_relabel_epoch(2) == 1


def confident_model(relabel: str = "low", timing: str = "epoch_end", **overrides) -> tuple:
    """An SCN whose classifier is sure of class 0, with stored labels all 1: every candidate flips."""
    ctx = stub_context(num_classes=3, labels=[1] * 16, epochs=20,
                       networks=lambda num_classes=None: FeatureBackbone(num_classes or 3))
    overrides.setdefault("relabel_epoch", 2)
    method = SCN(SCN.HParams(relabel=relabel, relabel_timing=timing, beta=0.5, **overrides))
    method.build(ctx)
    with torch.no_grad():
        method.net.backbone.fc.weight.zero_()
        method.net.backbone.fc.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))
        method.net.attention.weight.zero_()
        method.net.attention.bias.zero_()  # a = 0.5 for all -> logits (10, 0, 0)
    return ctx, method


def step(ctx, method, index: torch.Tensor, epoch: int) -> dict:
    return method.train_step(Batch(torch.randn(index.numel(), 2), ctx.labels.current[index], index), PHASE, epoch)


def test_relabels_apply_at_epoch_end_to_the_low_group_only() -> None:
    ctx, method = confident_model()
    assert method.first_relabel_epoch == 2
    method.on_epoch_start(PHASE, 0)  # epoch 1 (1-based): before the relabel epoch
    step(ctx, method, torch.arange(8), 0)
    assert method.on_epoch_end(PHASE, 0) == {} and int(ctx.labels.changes) == 0
    method.on_epoch_start(PHASE, 1)
    out = step(ctx, method, torch.arange(8), 1)
    assert out["relabel_share"].item() == pytest.approx(0.5)  # the 4 low-importance samples of 8
    assert torch.equal(ctx.labels.current, torch.ones(16, dtype=torch.long))  # nothing changed mid-epoch
    assert method.on_epoch_end(PHASE, 1) == {"relabelled_epoch": 4.0}
    assert int((ctx.labels.current[:8] == 0).sum()) == 4 and int(ctx.labels.changes) == 4
    assert torch.equal(ctx.labels.given, torch.ones(16, dtype=torch.long))  # the injected labels stay


def test_code_option_relabels_every_sample_and_immediate_timing_applies_at_once() -> None:
    ctx, method = confident_model(relabel="all", timing="immediate")
    method.on_epoch_start(PHASE, 5)
    step(ctx, method, torch.arange(8), 5)
    assert torch.equal(ctx.labels.current[:8], torch.zeros(8, dtype=torch.long))  # already applied
    assert method.on_epoch_end(PHASE, 5) == {"relabelled_epoch": 8.0}
    ctx, method = confident_model(fidelity="code")
    assert method.relabel_set == "all"


def test_repeated_samples_in_an_epoch_are_relabelled_once() -> None:
    ctx, method = confident_model(relabel="all")
    method.on_epoch_start(PHASE, 5)
    step(ctx, method, torch.tensor([3, 3, 4, 5]), 5)
    step(ctx, method, torch.tensor([3, 6, 6, 7]), 5)
    method.on_epoch_end(PHASE, 5)
    assert int(ctx.labels.changes) == 5
    assert ctx.labels.current.tolist() == [1, 1, 1, 0, 0, 0, 0, 0] + [1] * 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"beta": 1.0}, "beta"), ({"relabel": "high"}, "relabel"), ({"margin": -0.5}, "margin"),
     ({"relabel_threshold": 1.0}, "relabel_threshold"), ({"gamma": 2.0}, "gamma"),
     ({"relabel_timing": "later"}, "relabel_timing"), ({"relabel_epoch": -3}, "relabel_epoch")],
)
def test_validate_rejects_impossible_values(overrides: dict, message: str) -> None:
    # The path every run takes: typed options (choices, ranges), then the method's validate.
    with pytest.raises(ConfigError, match=message):
        build_hparams(SCN, overrides, epochs=10, noise_rate=0.2, batch_size=64)
