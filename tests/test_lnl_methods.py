"""GCE, SCE and ELR: the hand-computed values of the design's Part D.4, per-sample state, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, whole_and_resumed
from nlbench import Batch, Phase
from nlbench.context import SampleState
from nlbench.lib.losses import elr_probabilities, elr_regulariser, gce_per_sample, sce_per_sample
from nlbench.plugins import get_registry
from nlbench.testing import stub_context

PHASE = Phase("train", 10)


def _logits(*p: float) -> torch.Tensor:
    return torch.log(torch.tensor([p], dtype=torch.float64)).float()


# -- GCE ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("p_y", "expected"), [(0.5, 0.549183), (0.9, 0.101569), (0.1, 1.143534)])
def test_gce_values(p_y: float, expected: float) -> None:
    rest = (1 - p_y) / 2
    loss = gce_per_sample(_logits(p_y, rest, rest), torch.tensor([0]), 0.7)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gce_gradient_is_p_y_to_the_q_times_the_ce_gradient_and_small_q_is_ce() -> None:
    z = _logits(0.5, 0.3, 0.2).requires_grad_(True)
    gce_per_sample(z, torch.tensor([0]), 0.7).sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    F.cross_entropy(z2, torch.tensor([0])).backward()
    assert torch.allclose(z.grad, 0.5 ** 0.7 * z2.grad, atol=1e-6)
    near_ce = gce_per_sample(_logits(0.5, 0.3, 0.2), torch.tensor([0]), 1e-4)
    assert near_ce.item() == pytest.approx(math.log(2), abs=1e-3)


# -- SCE ---------------------------------------------------------------------------------------
def test_sce_value_and_the_reverse_term() -> None:
    loss, reverse = sce_per_sample(_logits(0.5, 0.3, 0.2), torch.tensor([0]), 0.1, 1.0)
    assert loss.item() == pytest.approx(4.674485, abs=1e-5)
    assert reverse.item() == pytest.approx(9.210340 * 0.5, abs=1e-5)
    _, paper = sce_per_sample(_logits(0.5, 0.3, 0.2), torch.tensor([0]), 0.1, 1.0, log_zero=-4.0)
    assert paper.item() == pytest.approx(2.0, abs=1e-6)


def test_sce_caps_the_ce_term_below_1e_7_without_gradient() -> None:
    z = torch.tensor([[-30.0, 0.0, 0.0]], requires_grad=True)  # p_y about 1e-13
    ce_only, _ = sce_per_sample(z, torch.tensor([0]), 1.0, 0.0)
    assert ce_only.item() == pytest.approx(16.118096, abs=1e-5)
    ce_only.sum().backward()
    assert torch.count_nonzero(z.grad) == 0


def test_sce_without_the_reverse_term_shares_one_run_id() -> None:
    sce = get_registry().method("sce")
    assert sce.canonical(sce.HParams(beta=0.0, rce_log_zero=-4.0)) == sce.canonical(sce.HParams(beta=0.0))
    assert sce.canonical(sce.HParams(rce_log_zero=-4.0)).rce_log_zero == -4.0


# -- ELR ---------------------------------------------------------------------------------------
def test_elr_loss_and_gradient_by_hand() -> None:
    z = _logits(0.6, 0.3, 0.1).requires_grad_(True)
    p, p_hat = elr_probabilities(z)
    targets = 0.7 * torch.zeros(1, 3) + 0.3 * p_hat
    assert targets.squeeze().tolist() == pytest.approx([0.18, 0.09, 0.03], abs=1e-6)
    loss = F.cross_entropy(z, torch.tensor([0])) + 3 * elr_regulariser(p, targets).mean()
    assert loss.item() == pytest.approx(0.065325, abs=1e-5)
    loss.backward()
    assert z.grad.squeeze().tolist() == pytest.approx([-0.487703, 0.350116, 0.137587], abs=1e-5)
    second = 0.7 * targets + 0.3 * p_hat
    assert second.squeeze().tolist() == pytest.approx([0.306, 0.153, 0.051], abs=1e-6)
    assert elr_regulariser(p.detach(), second).item() == pytest.approx(-0.267357, abs=1e-6)


def test_elr_clamps_probabilities_and_renormalises_its_targets() -> None:
    _, p_hat = elr_probabilities(torch.tensor([[10.0, 0.1, -30.0]]))
    clamped = torch.tensor([1 - 1e-4, 1e-4, 1e-4])
    assert p_hat.squeeze().tolist() == pytest.approx((clamped / clamped.sum()).tolist(), abs=1e-7)


def _elr(labels: list[int]):
    method = get_registry().method("elr")()
    ctx = stub_context(num_classes=3, labels=labels, in_features=3)
    method.build(ctx)
    with torch.no_grad():  # logits = the input: batches give the probabilities directly
        method.net.weight.copy_(torch.eye(3))
        method.net.bias.zero_()
    return method


def test_elr_updates_targets_before_the_loss_and_a_repeated_sample_takes_its_last_prediction() -> None:
    method = _elr([0, 1, 2, 0])
    first, second = _logits(0.6, 0.3, 0.1), _logits(0.2, 0.2, 0.6)
    x = torch.cat([first, second, first])  # sample 2 drawn twice: first with P', last with P''
    index = torch.tensor([0, 2, 2])
    for group in method.optimizer.param_groups:  # keep the logits fixed: only the state moves
        group["lr"] = 0.0
    out = method.train_step(Batch(x, torch.tensor([0, 2, 2]), index), PHASE, 0)
    t = method.targets.data
    assert t[0].tolist() == pytest.approx([0.18, 0.09, 0.03], abs=1e-6)
    assert t[2].tolist() == pytest.approx([0.18, 0.09, 0.03], abs=1e-6)  # the last occurrence (P')
    assert t[1].tolist() == [0.0, 0.0, 0.0] and t[3].tolist() == [0.0, 0.0, 0.0]
    # both rows of sample 2 read the updated target: their scores are <t_2, p> of their own p
    assert out["sample_score"][1].item() == pytest.approx(0.18 * 0.2 + 0.09 * 0.2 + 0.03 * 0.6, abs=1e-6)
    assert set(out) >= {"loss", "loss_ce", "loss_elr", "logits", "sample_score"}


def test_elr_targets_survive_a_checkpoint_round_trip_bit_for_bit() -> None:
    method = _elr([0, 1, 2, 0])
    method.train_step(Batch(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.arange(4)), PHASE, 0)
    saved = method.state_dict()
    assert "targets" in saved and "targets" not in method.deployable_state()
    fresh = _elr([0, 1, 2, 0])
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.targets.data, method.targets.data) and fresh.targets.data.abs().sum() > 0
    with pytest.raises(ValueError, match="shape"):
        SampleState(5, (3,), torch.float32, 0.0, torch.device("cpu")).load_state_dict(saved["targets"])


def test_sample_state_keeps_the_last_occurrence_of_a_repeated_index() -> None:
    state = SampleState(4, (), torch.float32, -1.0, torch.device("cpu"))
    state.update(torch.tensor([3, 1, 3, 3, 1]), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert state.data.tolist() == [-1.0, 5.0, -1.0, 4.0]


# -- the three in the CLI ------------------------------------------------------------------------
def test_the_lnl_group_selects_them_and_tables_order_them(cli, tmp_path) -> None:
    dry = cli("sweep", "--methods", "standard+lnl", "--noise", "0.2", "--seeds", "1", "--dry-run",
              "--runs-dir", str(tmp_path))
    assert dry.code == 0, dry.err
    assert all(name in dry.out for name in ("gce", "sce", "elr", "standard"))
    from nlbench.catalogue import METHOD_ORDER

    assert METHOD_ORDER[-4:] == ("gce", "sce", "elr", "dividemix")


@pytest.mark.slow
def test_elr_resumed_equals_a_whole_run_and_records_its_state_size(cli, tmp_path) -> None:
    a, b = whole_and_resumed(cli, tmp_path, ["run", "--method", "elr", "--epochs", "2", "--noise", "0.3", *TINY])
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]
    assert a["cost"]["sample_state_mb"] == pytest.approx(86 * 7 * 4 / 2**20)  # N x K float32
    assert np.isfinite(a["diagnostics"]["loss_elr"])


def test_adam_ignores_a_constant_factor_on_the_loss() -> None:
    """docs/methods.md §5.10: under Adam without weight decay only the ratio alpha : beta matters."""
    updates = []
    for factor in (1.0, 10.0):
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 3)
        before = net.weight.detach().clone()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss, _ = sce_per_sample(net(torch.randn(8, 4)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), 0.1 * factor,
                                 1.0 * factor)
        loss.mean().backward()
        optimizer.step()
        updates.append(net.weight.detach() - before)
    assert torch.allclose(updates[0], updates[1], rtol=1e-4, atol=1e-9)


def test_gce_keeps_a_finite_gradient_where_the_labels_probability_underflows() -> None:
    """A confidently wrong sample (p_y = e^-200, 0 in float32): pow's gradient would be NaN."""
    z = torch.tensor([[0.0, 200.0], [1.0, 0.0]], requires_grad=True)
    loss = gce_per_sample(z, torch.tensor([0, 0]), 0.7)
    loss.mean().backward()
    assert torch.isfinite(z.grad).all() and torch.equal(z.grad[0], torch.zeros(2))
    assert loss[0].item() == pytest.approx(1 / 0.7)
