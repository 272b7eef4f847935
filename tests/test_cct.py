"""CCT: the lambda schedule, the consensus loss and the distillation loss on worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from nlbench.plugins import get_registry
from nlbench.schedules import cct_lambda


@pytest.fixture(scope="module")
def cct_cls():
    return get_registry().method("cct")


@pytest.mark.parametrize("epoch,expected", [(0, 0.470), (25, 0.641), (50, 0.792), (90, 0.900), (99, 0.894)])
def test_lambda_matches_methods_md_for_100_epochs(epoch, expected):
    assert cct_lambda(epoch, 100) == pytest.approx(expected, abs=5e-4)


def test_lambda_for_40_epochs_and_clip_option():
    assert cct_lambda(36, 40) == pytest.approx(0.900, abs=5e-4)
    assert cct_lambda(39, 40) == pytest.approx(0.896, abs=5e-4)
    assert cct_lambda(39, 40, clip=True) == pytest.approx(0.9)


def _method(cct_cls, **hp):
    method = cct_cls(cct_cls.HParams(**hp))
    return method


def _kl(q, p):
    return sum(qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p))


def _softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def test_consensus_loss_two_networks_by_hand(cct_cls):
    z1 = [2.0, 0.0, -1.0]
    z2 = [0.5, 1.0, 0.0]
    y = 0
    p1, p2 = _softmax(z1), _softmax(z2)
    ce1, ce2 = -math.log(p1[y]), -math.log(p2[y])
    kl_12, kl_21 = _kl(p2, p1), _kl(p1, p2)  # KL(p_k || p_j) for (j, k) = (1, 2) and (2, 1)
    lam = 0.3
    method = _method(cct_cls, networks=2)
    terms = method.consensus_loss([torch.tensor([z1]), torch.tensor([z2])], torch.tensor([y]), lam)
    l_sup = (ce1 + ce2) / 2
    l_cons = (kl_12 + kl_21) / 2
    assert terms["l_sup"].item() == pytest.approx(l_sup, rel=1e-5)
    assert terms["l_cons"].item() == pytest.approx(l_cons, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((1 - lam) * l_sup + lam * l_cons, rel=1e-5)


def test_term_weight_options(cct_cls):
    three = _method(cct_cls, networks=3)
    assert three.term_factors() == pytest.approx((1 / 3, 1 / 6))
    assert _method(cct_cls, networks=3, term_weights="thirds").term_factors() == pytest.approx((1 / 3, 1 / 3))
    assert _method(cct_cls, networks=3, term_weights="code").term_factors() == pytest.approx((0.33, 0.33))


def test_consensus_gradient_reaches_every_network(cct_cls):
    method = _method(cct_cls, networks=3)
    logits = [torch.randn(4, 5, requires_grad=True) for _ in range(3)]
    terms = method.consensus_loss(logits, torch.tensor([0, 1, 2, 3]), 0.9)
    terms["l_cons"].backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in logits)


def test_supervision_off_uses_only_the_consistency_term(cct_cls):
    method = _method(cct_cls, networks=2, supervision=False)
    z = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    terms = method.consensus_loss(z, torch.tensor([0]), 0.5)
    assert terms["loss"].item() == pytest.approx(0.5 * terms["l_cons"].item())


def test_distillation_loss_worked_example(cct_cls):
    teachers = [[2.0, 0.0], [1.0, 1.0], [0.0, 2.0]]
    student = [1.0, -1.0]
    y = 1
    u = 2.0
    p_s = _softmax(student, u)
    soft = sum(-sum(q * math.log(p) for q, p in zip(_softmax(t, u), p_s)) for t in teachers)
    hard = -math.log(_softmax(student)[y])
    method = _method(cct_cls)
    value = method.distillation_loss([torch.tensor([t]) for t in teachers], torch.tensor([student]), torch.tensor([y]))
    assert value.item() == pytest.approx(0.5 * soft + 0.5 * hard, rel=1e-5)
    code = _method(cct_cls, kd_weights="code")
    value = code.distillation_loss([torch.tensor([t]) for t in teachers], torch.tensor([student]), torch.tensor([y]))
    assert value.item() == pytest.approx(0.5 * soft + 1.5 * hard, rel=1e-5)


def test_one_network_without_supervision_is_refused(cli):
    result = cli("run", "--method", "cct", "--set", "methods.cct.networks=1", "--set", "methods.cct.supervision=false")
    assert result.code == 2
    assert "one network with the supervision loss off" in result.err


@pytest.mark.parametrize("value", ["0", "5"])
def test_network_count_outside_1_to_4_is_refused(cli, value):
    result = cli("run", "--method", "cct", "--set", f"methods.cct.networks={value}")
    assert result.code == 2 and "methods.cct.networks must be in [1, 4]" in result.err
