"""Co-teaching+: the schedules, the disagreement exchange (known and empty sets) and the init_epoch switch."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.lib.selection import coteaching_plus_forget_rate
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context

CoTeachingPlus = get_registry().method("coteaching_plus")
drop_last_if_index_zero = sys.modules[CoTeachingPlus.__module__].drop_last_if_index_zero
PHASE = Phase("train", 20)
LABELS = torch.zeros(6, dtype=torch.long)
INDEX = torch.arange(10, 16)
# Two-class logits [0, d]; with label 0, CE = ln(1 + e^d) and argmax = 1 iff d > 0.
D_1 = [1.0, -1.0, -5.0, 0.0, 2.0, -6.0]  # argmax 1 0 0 0 1 0
D_2 = [-2.0, 3.0, -9.0, 1.0, -1.0, -9.0]  # argmax 0 1 0 1 0 0 -> they disagree on {0, 1, 3, 4}


def two_class_logits(d: list[float]) -> torch.Tensor:
    d_t = torch.tensor(d)
    return torch.stack([torch.zeros_like(d_t), d_t], dim=1)


def sp(d: float) -> float:
    """ln(1 + e^d): the CE of logits [0, d] against label 0."""
    return math.log(1 + math.exp(d))


def built(**overrides) -> object:
    # forget_rate 0.5 with no ramp (num_gradual = 0): keep floor(0.5 * n).
    hp = CoTeachingPlus.HParams(**{"forget_rate": 0.5, "num_gradual": 0, **overrides})
    method = CoTeachingPlus(hp)
    method.build(stub_context(num_classes=2, epochs=20))
    method.on_epoch_start(PHASE, 0)
    return method


def test_schedules() -> None:
    # constant ("type_1" shape): 0.2 * min(e / 10, 1).
    assert coteaching_plus_forget_rate(5, 0.2, 10, 200, "constant") == pytest.approx(0.1)
    assert coteaching_plus_forget_rate(150, 0.2, 10, 200, "constant") == pytest.approx(0.2)
    # rise (paper): min(e tau / E_k, (1 + (e - E_k) / (E - E_k)) tau).
    assert coteaching_plus_forget_rate(5, 0.2, 10, 200, "rise") == pytest.approx(0.1)
    assert coteaching_plus_forget_rate(10, 0.2, 10, 200, "rise") == pytest.approx(0.2)
    assert coteaching_plus_forget_rate(105, 0.2, 10, 200, "rise") == pytest.approx(1.5 * 0.2)
    assert coteaching_plus_forget_rate(199, 0.2, 10, 200, "rise") == pytest.approx((1 + 189 / 190) * 0.2)
    # code: linspace(0, 0.2, 10) read at e + 1.
    assert coteaching_plus_forget_rate(0, 0.2, 10, 200, "code") == pytest.approx(0.2 / 9)
    assert coteaching_plus_forget_rate(9, 0.2, 10, 200, "code") == pytest.approx(0.2)


def test_disagreement_phase_exchanges_small_loss_samples_within_the_disagreement_set() -> None:
    method = built()
    terms = method.losses(two_class_logits(D_1), two_class_logits(D_2), LABELS, INDEX, epoch=5)
    # Within D = {0, 1, 3, 4}, keep floor(0.5 * 4) = 2. Net1's two smallest CEs: samples 1 (d=-1), 3 (d=0);
    # net2's: samples 0 (d=-2), 4 (d=-1). Samples 2 and 5 have the smallest losses but agree.
    assert terms["selected"].tolist() == [True, False, False, False, True, False]
    assert terms["loss1"].item() == pytest.approx((sp(1.0) + sp(2.0)) / 2, rel=1e-6)
    assert terms["loss2"].item() == pytest.approx((sp(3.0) + sp(1.0)) / 2, rel=1e-6)
    assert terms["disagreement"].item() == pytest.approx(4 / 6)
    assert terms["empty_disagreement"].item() == 0.0


def test_empty_disagreement_set_takes_a_plain_ce_step_on_the_whole_batch() -> None:
    method = built()
    same = two_class_logits(D_1)
    terms = method.losses(same, same.clone(), LABELS, INDEX, epoch=5)
    expected = sum(sp(d) for d in D_1) / 6
    assert terms["loss1"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["loss2"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["selected"].all()
    assert terms["empty_disagreement"].item() == 1.0


def test_before_init_epoch_it_is_plain_coteaching_on_the_whole_batch() -> None:
    method = built()
    terms = method.losses(two_class_logits(D_1), two_class_logits(D_2), LABELS, INDEX, epoch=4)
    # keep floor(0.5 * 6) = 3; net2's smallest: samples 2, 5 (d = -9), 0 (d = -2); net1's: 5, 2, 1.
    assert terms["selected"].tolist() == [True, False, True, False, False, True]
    assert terms["loss1"].item() == pytest.approx((sp(1.0) + sp(-5.0) + sp(-6.0)) / 3, rel=1e-6)
    assert terms["loss2"].item() == pytest.approx((sp(-9.0) + sp(3.0) + sp(-9.0)) / 3, rel=1e-6)
    assert "empty_disagreement" not in terms


def test_code_fidelity_switches_one_epoch_earlier() -> None:
    method = built(fidelity="code")
    assert not method.in_disagreement_phase(3)
    assert method.in_disagreement_phase(4)  # the code's epoch counter is e + 1 = 5
    assert built().in_disagreement_phase(5) and not built().in_disagreement_phase(4)


def test_double_softmax_option_feeds_probabilities_to_the_cross_entropy() -> None:
    method = built(double_softmax=True)
    same = two_class_logits(D_1)
    terms = method.losses(same, same.clone(), LABELS, INDEX, epoch=5)
    expected = 0.0
    for d in D_1:
        p0, p1 = 1 / (1 + math.exp(d)), math.exp(d) / (1 + math.exp(d))
        expected += math.log(1 + math.exp(p1 - p0)) / 6  # CE of "logits" (p0, p1) against label 0
    assert terms["loss1"].item() == pytest.approx(expected, rel=1e-6)


def test_code_step_gate_stops_the_empty_set_fallback() -> None:
    method = built(code_indexing=True, init_epoch=0)
    same = two_class_logits(D_1)
    method.batch_index = 2499  # (epoch 1 + 1) * 2499 < 5000: still trains
    open_gate = method.losses(same, same.clone(), LABELS, INDEX, epoch=1)
    assert open_gate["loss1"].item() == pytest.approx(sum(sp(d) for d in D_1) / 6, rel=1e-6)
    method.batch_index = 2500  # 2 * 2500 = 5000: a zero loss, nothing selected
    closed = method.losses(same, same.clone(), LABELS, INDEX, epoch=1)
    assert closed["loss1"].item() == 0.0 and not closed["selected"].any()


def test_code_index_zero_quirk_drops_the_last_disagreeing_sample() -> None:
    disagree = torch.tensor([True, True, False, True, True, False])
    index = torch.tensor([7, 0, 3, 9, 4, 5])
    assert drop_last_if_index_zero(disagree, index).tolist() == [True, True, False, True, False, False]
    assert torch.equal(drop_last_if_index_zero(disagree, index + 1), disagree)


def test_train_step_reports_diagnostics_and_steps_both_networks() -> None:
    method = CoTeachingPlus(CoTeachingPlus.HParams())
    method.build(stub_context(num_classes=3, epochs=20))
    method.on_epoch_start(PHASE, 6)
    before = [p.detach().clone() for net in (method.net1, method.net2) for p in net.parameters()]
    torch.manual_seed(0)
    out = method.train_step(Batch(torch.randn(8, 4), torch.randint(0, 3, (8,)), torch.arange(8)), PHASE, 6)
    after = [p for net in (method.net1, method.net2) for p in net.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert out["selected"].dtype == torch.bool and out["logits"].shape == (8, 3)
    assert out["forget_rate"].item() == pytest.approx(0.2 * 6 / 10)
    assert method.batch_index == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"forget_rate": 0.6, "schedule": "rise"}, "below 1"), ({"fidelity": "code", "schedule": "rise"}, "type_1"),
     ({"init_epoch": -1}, "init_epoch"), ({"normalisation": "sum"}, "normalisation")],
)
def test_validate_rejects_impossible_values(overrides: dict, message: str) -> None:
    # The path every run takes: typed options (choices, ranges), then the method's validate.
    with pytest.raises(ConfigError, match=message):
        build_hparams(CoTeachingPlus, overrides, epochs=200, noise_rate=0.2, batch_size=64)
