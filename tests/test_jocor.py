"""JoCoR: the per-sample joint loss (no stop-gradient), the joint selection and one optimiser for both nets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context

JoCoR = get_registry().method("jocor")
PHASE = Phase("train", 20)


def test_joint_loss_matches_the_hand_computed_value() -> None:
    # p1 = softmax(0, 0) = (1/2, 1/2); p2 = softmax(ln 3, 0) = (3/4, 1/4); label 0.
    z1 = torch.tensor([[0.0, 0.0]])
    z2 = torch.tensor([[math.log(3.0), 0.0]])
    ce1, ce2 = math.log(2), math.log(4 / 3)
    kl_21 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p2 || p1)
    kl_12 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(p1 || p2)
    expected = 0.1 * (ce1 + ce2) + 0.9 * (kl_21 + kl_12)
    value = JoCoR.joint_loss_per_sample(z1, z2, torch.tensor([0]), co_lambda=0.9)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_co_regularisation_has_no_stop_gradient() -> None:
    z1 = torch.tensor([[0.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    JoCoR.joint_loss_per_sample(z1, z2, torch.tensor([0]), co_lambda=1.0).sum().backward()
    # lambda = 1 leaves KL(p2 || p1) + KL(p1 || p2). Its full gradient in z1 is
    # (p1 - p2) + p1 * (log p1 - log p2 - KL(p1 || p2)); a stop-gradient on the target side would
    # leave only (p1 - p2). Symmetrically for z2.
    p1, p2 = (0.5, 0.5), (0.75, 0.25)
    kl_12 = sum(a * math.log(a / b) for a, b in zip(p1, p2))
    kl_21 = sum(b * math.log(b / a) for a, b in zip(p1, p2))
    grad1 = [(a - b) + a * (math.log(a / b) - kl_12) for a, b in zip(p1, p2)]
    grad2 = [(b - a) + b * (math.log(b / a) - kl_21) for a, b in zip(p1, p2)]
    assert z1.grad[0].tolist() == pytest.approx(grad1, abs=1e-6)
    assert z2.grad[0].tolist() == pytest.approx(grad2, abs=1e-6)
    assert abs(grad1[0] - (p1[0] - p2[0])) > 0.1  # the target-side term is really there


def test_joint_selection_keeps_the_smallest_joint_losses() -> None:
    per_sample = torch.tensor([0.5, 2.0, 0.1, 0.7])
    mask, loss = JoCoR.select(per_sample, forget_rate=0.25)  # keep floor(0.75 * 4) = 3
    assert mask.tolist() == [True, False, True, True]
    assert loss.item() == pytest.approx((0.5 + 0.1 + 0.7) / 3)


def test_train_step_minimises_the_selected_joint_loss_with_one_optimiser() -> None:
    torch.manual_seed(1)
    ctx = stub_context(num_classes=3, noise_rate=0.25, epochs=20)
    method = JoCoR(JoCoR.HParams())
    method.build(ctx)
    params = {id(p) for g in method.optimizer.param_groups for p in g["params"]}
    assert params == {id(p) for net in (method.net1, method.net2) for p in net.parameters()}
    method.on_epoch_start(PHASE, 15)  # forget = tau = 0.25 -> keep 6 of 8
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with torch.no_grad():
        z1, z2 = method.net1(x), method.net2(x)
    ce = F.cross_entropy(z1, y, reduction="none") + F.cross_entropy(z2, y, reduction="none")
    p1, p2 = F.softmax(z1, 1), F.softmax(z2, 1)
    kl = (p2 * (p2.log() - p1.log())).sum(1) + (p1 * (p1.log() - p2.log())).sum(1)
    joint = 0.1 * ce + 0.9 * kl
    keep = torch.zeros(8, dtype=torch.bool)
    keep[torch.argsort(joint, stable=True)[:6]] = True
    out = method.train_step(Batch(x, y, torch.arange(8)), PHASE, 15)
    assert out["selected"].tolist() == keep.tolist()
    assert out["loss"].item() == pytest.approx(joint[keep].mean().item(), rel=1e-5)
    assert out["forget_rate"].item() == pytest.approx(0.25)
    assert out["lambda"].item() == pytest.approx(0.9)


def test_code_schedule_option() -> None:
    method = JoCoR(JoCoR.HParams(fidelity="code"))
    method.build(stub_context(noise_rate=0.2))
    assert method.forget_rate(0) == pytest.approx(0.2 / 9)
    assert JoCoR(JoCoR.HParams()).hp.schedule == "paper"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"co_lambda": 1.5}, "co_lambda"), ({"forget_rate": 2.0}, "forget_rate"), ({"schedule": "x"}, "schedule")],
)
def test_validate_rejects_impossible_values(overrides: dict, message: str) -> None:
    # The path every run takes: typed options (choices, ranges), then the method's validate.
    with pytest.raises(ConfigError, match=message):
        build_hparams(JoCoR, overrides, epochs=10, noise_rate=0.2, batch_size=64)
