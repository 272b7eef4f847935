"""Co-teaching: the forget-rate schedules, the small-loss exchange and a full step on stub networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.lib.selection import (
    coteaching_forget_rate,
    coteaching_remember_rate,
    cross_update,
    keep_count,
    small_loss_mask,
)
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context

CoTeaching = get_registry().method("coteaching")
PHASE = Phase("train", 20)


def two_class_logits(d: list[float]) -> torch.Tensor:
    """Logits [0, d] per sample: with label 0 the cross-entropy is ln(1 + e^d)."""
    d_t = torch.tensor(d)
    return torch.stack([torch.zeros_like(d_t), d_t], dim=1)


def softplus(d: float) -> float:
    return math.log(1 + math.exp(d))


def test_paper_remember_rate_ramps_linearly_to_one_minus_tau() -> None:
    # R(e) = 1 - tau * min(e / T_k, 1) with tau = 0.2, T_k = 10.
    expected = {0: 1.0, 5: 0.9, 9: 0.82, 10: 0.8, 15: 0.8, 199: 0.8}
    for epoch, value in expected.items():
        assert coteaching_remember_rate(epoch, 0.2, 10) == pytest.approx(value)


def test_paper_remember_rate_exponent_applies_to_the_epoch() -> None:
    # c = 2: R(e) = 1 - 0.2 * min(e^2 / 10, 1).
    assert coteaching_remember_rate(2, 0.2, 10, exponent=2) == pytest.approx(1 - 0.2 * 0.4)
    assert coteaching_remember_rate(3, 0.2, 10, exponent=2) == pytest.approx(1 - 0.2 * 0.9)
    assert coteaching_remember_rate(4, 0.2, 10, exponent=2) == pytest.approx(0.8)


def test_code_forget_rate_is_the_official_linspace_read_at_epoch_plus_one() -> None:
    # linspace(0, tau^c, 10) = tau^c * k / 9, read at k = e + 1; tau from k = 10 on.
    assert coteaching_forget_rate(0, 0.2, 10, form="code") == pytest.approx(0.2 / 9)
    assert coteaching_forget_rate(7, 0.2, 10, form="code") == pytest.approx(0.2 * 8 / 9)
    assert coteaching_forget_rate(8, 0.2, 10, form="code") == pytest.approx(0.2)
    assert coteaching_forget_rate(9, 0.2, 10, form="code") == pytest.approx(0.2)
    # c = 2: the ramp peaks at tau^2 = 0.04, then jumps to tau (the code's exponent quirk).
    assert coteaching_forget_rate(8, 0.2, 10, exponent=2, form="code") == pytest.approx(0.04)
    assert coteaching_forget_rate(9, 0.2, 10, exponent=2, form="code") == pytest.approx(0.2)


def test_keep_count_floors_and_guards_round_off() -> None:
    assert keep_count(32, 0.2) == 25  # floor(25.6)
    assert keep_count(8, 0.25) == 6
    assert keep_count(90, 0.3) == 63  # (1 - 0.3) * 90 = 62.99999999999999 in floating point
    assert keep_count(1, 0.5) == 1  # never an empty selection
    assert int(keep_count(torch.tensor(4), 0.5)) == 2


def test_small_loss_mask_keeps_the_smallest_and_breaks_ties_by_position() -> None:
    mask = small_loss_mask(torch.tensor([0.3, 0.1, 0.3, 0.9, 0.3]), 3)
    assert mask.tolist() == [True, True, True, False, False]


def test_cross_update_trains_each_network_on_its_peers_small_loss_set() -> None:
    labels = torch.zeros(4, dtype=torch.long)
    # CE_f = ln(1 + e^d_f): the two smallest are samples 2 (d = -1) and 0 (d = 0) -> S_f = {0, 2}.
    d_f = [0.0, 2.0, -1.0, 1.0]
    # CE_g: the two smallest are samples 1 (d = -2) and 3 (d = -1) -> S_g = {1, 3}.
    d_g = [3.0, -2.0, 0.0, -1.0]
    step = cross_update(two_class_logits(d_f), two_class_logits(d_g), labels, forget_rate=0.5)
    assert step.update_f.tolist() == [False, True, False, True]  # f trains on S_g
    assert step.update_g.tolist() == [True, False, True, False]  # g trains on S_f
    assert step.loss_f.item() == pytest.approx((softplus(2.0) + softplus(1.0)) / 2, rel=1e-6)
    assert step.loss_g.item() == pytest.approx((softplus(3.0) + softplus(0.0)) / 2, rel=1e-6)
    # The official code divides the selected mean by the keep count (2) once more.
    code = cross_update(two_class_logits(d_f), two_class_logits(d_g), labels, 0.5, divide_by_keep=True)
    assert code.loss_f.item() == pytest.approx((softplus(2.0) + softplus(1.0)) / 4, rel=1e-6)


def test_train_step_wires_the_exchange_and_steps_both_networks() -> None:
    torch.manual_seed(3)
    labels = torch.randint(0, 3, (16,))
    ctx = stub_context(num_classes=3, labels=labels.numpy(), noise_rate=0.25, epochs=20)
    method = CoTeaching(CoTeaching.HParams())
    method.build(ctx)
    assert method.tau == 0.25  # forget_rate = -1 -> the nominal noise rate
    method.on_epoch_start(PHASE, 12)  # past T_k: forget = tau -> keep floor(0.75 * 8) = 6
    x = torch.randn(8, 4)
    index = torch.arange(8)
    y = labels[:8]
    before1 = [p.detach().clone() for p in method.net1.parameters()]
    before2 = [p.detach().clone() for p in method.net2.parameters()]
    ref1, ref2 = [torch.nn.Linear(4, 3) for _ in range(2)]
    ref1.load_state_dict(method.net1.state_dict())
    ref2.load_state_dict(method.net2.state_dict())

    out = method.train_step(Batch(x, y, index), PHASE, 12)

    ce1 = F.cross_entropy(ref1(x), y, reduction="none")
    ce2 = F.cross_entropy(ref2(x), y, reduction="none")
    picked_by_2 = torch.zeros(8, dtype=torch.bool)
    picked_by_2[torch.argsort(ce2.detach(), stable=True)[:6]] = True
    assert out["selected"].tolist() == picked_by_2.tolist()
    expected_loss1 = ce1[picked_by_2].mean()
    assert out["loss1"].item() == pytest.approx(expected_loss1.item(), rel=1e-6)
    assert out["forget_rate"].item() == pytest.approx(0.25)
    assert out["logits"].shape == (8, 3)
    # net1's gradient is exactly that of its own loss on net2's pick.
    grads = torch.autograd.grad(expected_loss1, list(ref1.parameters()))
    for param, grad in zip(method.net1.parameters(), grads):
        assert torch.allclose(param.grad, grad, atol=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(before1, method.net1.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before2, method.net2.parameters()))


def test_fidelity_code_switches_schedule_and_normalisation() -> None:
    method = CoTeaching(CoTeaching.HParams(fidelity="code"))
    method.build(stub_context(noise_rate=0.2))
    assert method.schedule == "code" and method.divide_by_keep
    assert method.forget_rate(0) == pytest.approx(0.2 / 9)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"forget_rate": 1.0}, "forget_rate"), ({"schedule": "linear"}, "schedule"),
     ({"exponent": 0.0}, "exponent"), ({"fidelity": "exact"}, "fidelity")],
)
def test_validate_rejects_impossible_values(overrides: dict, message: str) -> None:
    # The path every run takes: typed options (choices, ranges), then the method's validate.
    with pytest.raises(ConfigError, match=message):
        build_hparams(CoTeaching, overrides, epochs=10, noise_rate=0.2, batch_size=64)


def test_predict_members_expose_both_networks_and_net1_is_deployable() -> None:
    method = CoTeaching(CoTeaching.HParams())
    method.build(stub_context())
    x = torch.randn(5, 4)
    members = method.predict_members(x, PHASE)
    assert set(members) == {"net1", "net2", "ensemble", "model"}
    assert torch.equal(members["model"], method.net1(x))
    expected = (F.softmax(method.net1(x), 1) + F.softmax(method.net2(x), 1)) / 2
    assert torch.allclose(members["ensemble"], expected)


@pytest.mark.parametrize("method", ["coteaching", "coteaching_plus", "jocor"])
def test_the_forget_rate_is_checked_alike_by_every_selection_method(method):
    from nlbench.plugins import get_registry
    from nlbench.spec.resolve import build_hparams

    cls = get_registry().method(method)
    with pytest.raises(ConfigError, match=r"forget_rate must be in \[0, 1\) or -1 \(= the noise rate\), got 1.5"):
        build_hparams(cls, {"forget_rate": 1.5}, epochs=10, noise_rate=0.2, batch_size=64)
    with pytest.raises(ConfigError, match=r"the forget rate must be in \[0, 1\), got 1.0 \(from the noise rate\)"):
        build_hparams(cls, {}, epochs=10, noise_rate=1.0, batch_size=64)
    assert build_hparams(cls, {}, epochs=10, noise_rate=0.4, batch_size=64).forget_rate == -1.0
