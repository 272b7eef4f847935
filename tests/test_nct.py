"""NCT: the schedules against docs/methods.md values, the per-network loss and the target-variability labels."""

from __future__ import annotations

import math

import pytest
import torch

from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.lib.selection import nct_alpha, nct_variability_rate, variability_labels
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context

NCT = get_registry().method("nct")
PHASE = Phase("train", 10)


@pytest.mark.parametrize(("epoch", "value"), [(0, 0.006), (5, 0.054), (10, 0.258), (15, 0.658), (20, 0.9), (60, 0.9)])
def test_alpha_ramp_values_for_e_r_20(epoch: int, value: float) -> None:
    assert nct_alpha(epoch, 20) == pytest.approx(value, abs=5e-4)


def test_alpha_ramp_formula() -> None:
    assert nct_alpha(5, 20) == pytest.approx(0.9 * math.exp(-5 * 0.75**2))


@pytest.mark.parametrize(
    ("epoch", "value"), [(0, 0.2), (3, 0.2), (4, 0.2), (5, 0.27), (10, 0.38), (20, 0.47), (50, 0.56), (100, 0.63), (199, 0.70)]
)
def test_variability_rate_values_for_200_epochs(epoch: int, value: float) -> None:
    assert nct_variability_rate(epoch, 200) == pytest.approx(value, abs=5e-3)


def test_variability_rate_formula() -> None:
    assert nct_variability_rate(10, 200) == pytest.approx(0.2 + 0.5 * math.log(7) / math.log(197))
    assert nct_variability_rate(4, 5) == pytest.approx(0.2)  # ln(1) = 0 at e = e_w + 1


def test_network_loss_is_ce_plus_t_squared_kl_to_the_detached_peer() -> None:
    own = torch.tensor([[0.0, 0.0]], requires_grad=True)
    peer = torch.tensor([[4 * math.log(3.0), 0.0]], requires_grad=True)  # softmax(peer / 4) = (3/4, 1/4)
    loss = NCT.network_loss(own, peer, torch.tensor([0]), alpha=0.5, temperature=4.0)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(q || p), p = softmax(own / 4) = (1/2, 1/2)
    assert loss.item() == pytest.approx(0.5 * math.log(2) + 0.5 * 16 * kl, rel=1e-6)
    loss.backward()
    assert peer.grad is None  # the peer is a fixed teacher
    # d/d own: (1 - alpha) (p - onehot) + alpha T^2 (p - q) / T, with p = (1/2, 1/2) at T = 1 and T = 4.
    expected = [0.5 * (0.5 - 1) + 0.5 * 4 * (0.5 - 0.75), 0.5 * 0.5 + 0.5 * 4 * (0.5 - 0.25)]
    assert own.grad[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_variability_labels_code_form_may_keep_the_label() -> None:
    labels = torch.randint(0, 7, (20000,), generator=torch.Generator().manual_seed(0))
    original = labels.clone()
    gen = torch.Generator().manual_seed(1)
    corrupted = variability_labels(labels, 1.0, 7, gen)
    assert torch.equal(labels, original)  # the input is never changed in place
    # Every label is redrawn as (y + u) mod 7 with u ~ U{0..6}: it changes with probability 6/7.
    assert (corrupted != labels).float().mean().item() == pytest.approx(6 / 7, abs=0.01)
    different = variability_labels(labels, 1.0, 7, gen, always_different=True)
    assert bool((different != labels).all())
    assert torch.equal(variability_labels(labels, 0.0, 7, gen), labels)
    rate = (variability_labels(labels, 0.3, 7, gen) != labels).float().mean().item()
    assert rate == pytest.approx(0.3 * 6 / 7, abs=0.01)


def test_train_step_never_touches_the_stored_labels() -> None:
    stored = torch.arange(16) % 3
    ctx = stub_context(num_classes=3, labels=stored.numpy(), epochs=10)
    method = NCT(NCT.HParams(variability_min=0.7, variability_max=0.7))
    method.build(ctx)
    before = [p.detach().clone() for net in (method.net1, method.net2) for p in net.parameters()]
    with ctx.at("train", 9):
        method.on_epoch_start(PHASE, 9)
    torch.manual_seed(0)
    for start in (0, 8):
        index = torch.arange(start, start + 8)
        y = ctx.labels.current[index].clone()
        batch = Batch(torch.randn(8, 4), ctx.labels.current[index], index)
        out = method.train_step(batch, PHASE, 9)
        assert torch.equal(batch.y, y)
        assert out["labels_changed"].item() > 0  # labels were corrupted for training ...
    assert torch.equal(ctx.labels.current, stored)  # ... but never in the store
    assert int(ctx.labels.changes) == 0
    after = [p for net in (method.net1, method.net2) for p in net.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # both optimisers stepped
    assert out["alpha"].item() == pytest.approx(0.9)  # e_r = 0.2 * 10 = 2 epochs
    assert out["variability_rate"].item() == pytest.approx(0.7)


def test_variability_draws_are_seeded_by_the_run() -> None:
    def labels_seen(seed: int) -> torch.Tensor:
        ctx = stub_context(num_classes=5, seed=seed)
        method = NCT(NCT.HParams())
        method.build(ctx)
        with ctx.at("train", 6):
            method.on_epoch_start(PHASE, 6)
        return variability_labels(torch.zeros(64, dtype=torch.long), 0.5, 5, method._generator)

    assert torch.equal(labels_seen(3), labels_seen(3))
    assert not torch.equal(labels_seen(3), labels_seen(4))


def test_ensemble_is_the_sum_of_logits_and_is_deployed() -> None:
    method = NCT(NCT.HParams())
    method.build(stub_context())
    x = torch.randn(5, 4)
    members = method.predict_members(x, PHASE)
    assert torch.allclose(members["ensemble"], method.net1(x) + method.net2(x))
    assert torch.equal(members["model"], members["ensemble"])
    assert torch.allclose(method.predict(x), members["ensemble"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"temperature": 0.0}, "temperature"), ({"variability_min": 0.8}, "variability"),
     ({"alpha_max": 1.2}, "alpha_max"), ({"rampup_fraction": -0.1}, "rampup_fraction")],
)
def test_validate_rejects_impossible_values(overrides: dict, message: str) -> None:
    # The path every run takes: typed options (choices, ranges), then the method's validate.
    with pytest.raises(ConfigError, match=message):
        build_hparams(NCT, overrides, epochs=10, noise_rate=0.2, batch_size=64)
