"""NLA: the NAW weight, its covariances and schedule, the two consistency forms, the total loss, its
gradient paths and the flipped view (the hand-computed values of the design's Part D.4)."""

from __future__ import annotations

import math
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from nlbench import Batch, Phase
from nlbench.lib.losses import (
    bivariate_normal_density,
    cross_entropy_per_sample,
    gt_and_nearest_negative,
    js_divergence_per_sample,
    logit_mixture_jsd_per_sample,
    naw_weights,
)
from nlbench.plugins import get_registry
from nlbench.testing import stub_context

NLA = get_registry().method("nla")
nla_module = sys.modules[NLA.__module__]
TRUE_MEAN, FALSE_MEAN = nla_module.TRUE_MEAN, nla_module.FALSE_MEAN
true_covariance, false_covariance = nla_module.true_covariance, nla_module.false_covariance
naw_epsilon = nla_module.naw_epsilon
PHASE = Phase("train", 60)
# timm's 0.4M-parameter test ResNet keeps the engine runs fast (as tests/test_conformance.py).
BACKBONE = "test_resnet" if "test_resnet" in timm.list_models("test_resnet*") else "resnet18"


def _logits(*rows: tuple[float, ...]) -> torch.Tensor:
    """Logits ln P of probability rows (float64 log, then float32, as the design's values)."""
    return torch.log(torch.tensor(rows, dtype=torch.float64)).float()


def _weights(logits: torch.Tensor, labels: list[int], eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return naw_weights(logits, torch.tensor(labels), TRUE_MEAN, true_covariance(eps), FALSE_MEAN, false_covariance())


class FlatNet(nn.Module):
    """A stand-in backbone for image batches: flatten, then one linear layer (no BatchNorm)."""

    def __init__(self, pixels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(pixels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def nla_with(num_classes: int = 3, pixels: int = 6, epochs: int = 60, **hp):
    """An NLA built on a stub context whose network is a FlatNet over 1 x 2 x 3 images."""
    torch.manual_seed(0)
    ctx = stub_context(num_classes=num_classes, epochs=epochs,
                       networks=lambda num_classes=None: FlatNet(pixels, num_classes or 3))
    method = NLA(NLA.HParams(**hp))
    method.build(ctx)
    return method


# -- D.4 items 1-3: covariances, schedule, weights ------------------------------------------------
def test_covariances_from_the_codes_standard_deviations() -> None:
    assert true_covariance(0.0) == ((pytest.approx(0.8), 0.0), (0.0, pytest.approx(0.8)))
    (a, b), (b2, c) = true_covariance(1.0)
    assert (a, b, b2, c) == pytest.approx((0.8, -0.48, -0.48, 0.8), abs=1e-12)
    assert true_covariance(0.5)[0][1] == pytest.approx(-0.24, abs=1e-12)
    (a, b), (b2, c) = false_covariance()
    assert (a, b, b2, c) == pytest.approx((0.85110278, 0.80509722, 0.80509722, 0.85110278), abs=1e-8)
    assert a * c - b * b == pytest.approx(0.07619440, abs=1e-8)


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0.0), (1, 0.221199), (4, 0.632121), (12, 0.950213)])
def test_epsilon_schedule_over_60_epochs(epoch: int, expected: float) -> None:
    assert naw_epsilon(epoch, 60) == pytest.approx(expected, abs=1e-6)


def test_epsilon_at_the_last_epoch_and_without_slope() -> None:
    assert naw_epsilon(59, 60) == pytest.approx(0.99999961, abs=1e-8)
    assert naw_epsilon(30, 60, slope=0.0) == 0.0


def test_naw_weight_of_a_correct_sample_at_the_first_and_a_late_epoch() -> None:
    z = _logits((0.7, 0.2, 0.1))
    w, correct = _weights(z, [0], 0.0)
    assert bool(correct) and w.item() == pytest.approx(0.183419, abs=1e-6)
    assert w.item() == pytest.approx(math.exp(-0.5 * 0.13 / 0.8) / (2 * math.pi * 0.8), abs=1e-6)
    w, _ = _weights(z, [0], 1.0)  # det 0.4096, quadratic form 0.113281
    assert w.item() == pytest.approx(0.234986, abs=1e-6)


def test_naw_weight_of_a_wrong_sample_uses_the_false_gaussian() -> None:
    w, correct = _weights(_logits((0.2, 0.7, 0.1)), [0], 0.0)
    assert not bool(correct) and w.item() == pytest.approx(0.056296, abs=1e-6)
    # The false Gaussian does not move with eps.
    assert _weights(_logits((0.2, 0.7, 0.1)), [0], 1.0)[0].item() == pytest.approx(0.056296, abs=1e-6)


def test_peak_densities_and_naw_cross_entropies() -> None:
    peak_true = bivariate_normal_density(torch.tensor(0.5), torch.tensor(0.5), TRUE_MEAN, true_covariance(0.0))
    peak_false = bivariate_normal_density(torch.tensor(0.30), torch.tensor(0.15), FALSE_MEAN, false_covariance())
    assert peak_true.item() == pytest.approx(0.198944, abs=1e-6)
    assert peak_false.item() == pytest.approx(0.576579, abs=1e-6)
    z, y = _logits((0.7, 0.2, 0.1), (0.2, 0.7, 0.1)), [0, 0]
    ce = cross_entropy_per_sample(z, torch.tensor(y))
    assert ce.tolist() == pytest.approx([0.356675, 1.609438], abs=1e-6)
    assert (_weights(z, y, 0.0)[0] * ce).tolist() == pytest.approx([0.065421, 0.090605], abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.37, 1.0])
def test_the_closed_form_density_equals_torchs_multivariate_normal(eps: float) -> None:
    torch.manual_seed(1)
    x, y = torch.rand(50, dtype=torch.float64), torch.rand(50, dtype=torch.float64)
    for mean, cov in ((TRUE_MEAN, true_covariance(eps)), (FALSE_MEAN, false_covariance())):
        normal = torch.distributions.MultivariateNormal(torch.tensor(mean, dtype=torch.float64),
                                                        torch.tensor(cov, dtype=torch.float64))
        reference = normal.log_prob(torch.stack([x, y], dim=1)).exp()
        assert torch.allclose(bivariate_normal_density(x, y, mean, cov).double(), reference, rtol=1e-5, atol=1e-7)


def test_nearest_negative_is_the_runner_up_or_the_winner_and_a_tie_counts_as_correct() -> None:
    torch.manual_seed(2)
    z = torch.randn(200, 7)
    z[:5, 1] = z[:5, 0] = z[:5].max(dim=1).values + 1.0  # exact ties between classes 0 and 1
    y = torch.randint(0, 7, (200,))
    y[:5] = 0
    p_gt, p_nn, correct = gt_and_nearest_negative(z, y)
    p = F.softmax(z, dim=1)
    top2 = p.topk(2, dim=1).values
    is_max = top2[:, 0] == p.gather(1, y.view(-1, 1)).squeeze(1)
    assert torch.equal(correct, is_max) and bool(correct[:5].all())
    assert torch.equal(p_nn, torch.where(is_max, top2[:, 1], top2[:, 0]))
    assert torch.equal(p_gt, p.gather(1, y.view(-1, 1)).squeeze(1))


# -- D.4 items 4-5: regulariser and total loss ----------------------------------------------------
def test_the_two_consistency_forms_differ() -> None:
    z, z_f = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert logit_mixture_jsd_per_sample(z, z_f).item() == pytest.approx(0.120115, abs=1e-6)
    assert js_divergence_per_sample(z, z_f).item() == pytest.approx(0.110944, abs=1e-6)
    assert logit_mixture_jsd_per_sample(z, z).item() == pytest.approx(0.0, abs=1e-7)
    assert js_divergence_per_sample(z_f, z).item() == pytest.approx(0.110944, abs=1e-6)


def test_code_fidelity_sums_the_divergence_over_the_batch() -> None:
    method = nla_with(num_classes=2, lam_a=0.0, lam_b=0.0, lam_c=1.0, fidelity="code")
    z, z_f = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    terms = method.losses(z, z_f, torch.tensor([0, 0]))
    assert terms["loss"].item() == pytest.approx(0.240229, abs=1e-6)
    assert terms["loss_jsd"].item() == pytest.approx(0.120115, abs=1e-6)
    textbook = nla_with(num_classes=2, lam_a=0.0, lam_b=0.0, lam_c=1.0, jsd="probabilities", jsd_scale=1.0)
    assert textbook.losses(z, z_f, torch.tensor([0, 0]))["loss"].item() == pytest.approx(0.110944, abs=1e-6)


TOTAL_Z = ((0.7, 0.2, 0.1), (0.2, 0.7, 0.1))
TOTAL_Z_F = ((0.6, 0.3, 0.1), (0.2, 0.7, 0.1))


@pytest.mark.parametrize(("hp", "expected"), [({}, 0.586546), ({"fidelity": "code"}, 0.534035),
                                               ({"jsd_scale": 2.0}, 0.534035)])
def test_total_loss_of_the_design_example(hp: dict, expected: float) -> None:
    method = nla_with(**hp)  # epoch 0: eps = 0
    terms = method.losses(_logits(*TOTAL_Z), _logits(*TOTAL_Z_F), torch.tensor([0, 0]))
    assert terms["loss"].item() == pytest.approx(expected, abs=1e-6)
    divergence = logit_mixture_jsd_per_sample(_logits(*TOTAL_Z), _logits(*TOTAL_Z_F))
    assert divergence.tolist() == pytest.approx([0.007001, 0.0], abs=1e-6)
    assert terms["loss_naw"].item() == pytest.approx((0.065421 + 0.090605) / 2, abs=1e-6)


# -- gradient paths -------------------------------------------------------------------------------
def _naw_gradient(detach: bool, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """d(mean w CE)/dz of the design's two rows, and the weights."""
    method = nla_with(lam_a=0.0, lam_b=1.0, lam_c=0.0, detach_weight=detach)
    method.true_cov = true_covariance(eps)
    z = _logits(*TOTAL_Z).requires_grad_(True)
    terms = method.losses(z, z.detach(), torch.tensor([0, 0]))
    terms["loss"].backward()
    return z.grad, terms["weights"].detach()


def test_the_weight_keeps_its_gradient_unless_detached() -> None:
    y = torch.tensor([0, 0])
    grad_detached, w = _naw_gradient(detach=True)
    p = torch.tensor(TOTAL_Z)
    # With w a constant: d(mean w CE)/dz = w (p - onehot) / B.
    assert torch.allclose(grad_detached, w.view(-1, 1) * (p - F.one_hot(y, 3)) / 2, atol=1e-6)
    grad_kept, _ = _naw_gradient(detach=False)
    # The weight's own gradient, CE dw/dz / B, is what the code adds.
    z = _logits(*TOTAL_Z).requires_grad_(True)
    weights, _ = _weights(z, [0, 0], 0.0)
    (weights * cross_entropy_per_sample(z, y).detach()).mean().backward()
    assert z.grad.abs().max() > 1e-3
    assert torch.allclose(grad_kept, grad_detached + z.grad, atol=1e-6)


def test_the_consistency_term_trains_both_views() -> None:
    for form in ("logits", "probabilities"):
        method = nla_with(lam_a=0.0, lam_b=0.0, lam_c=1.0, jsd=form)
        z, z_f = _logits(*TOTAL_Z).requires_grad_(True), _logits(*TOTAL_Z_F).requires_grad_(True)
        method.losses(z, z_f, torch.tensor([0, 0]))["loss"].backward()
        assert z.grad[0].abs().max() > 1e-3 and z_f.grad[0].abs().max() > 1e-3
        assert z.grad[1].abs().max() < 1e-6  # the second rows agree: no pull


# -- D.4 item 6: views, steps, options ------------------------------------------------------------
def test_the_second_view_is_the_flip_of_the_first_and_predict_uses_only_the_image() -> None:
    method = nla_with()
    torch.manual_seed(3)
    v = torch.randn(4, 1, 2, 3)
    with torch.no_grad():
        z, z_f = method.forward_views(v)
        assert torch.equal(z, method.net(v)) and torch.equal(z_f, method.net(torch.flip(v, dims=[3])))
        assert torch.equal(method.predict(v), method.net(v))
    channels_last = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    flipped = nla_module.flipped(channels_last)
    assert torch.equal(flipped, torch.flip(channels_last, dims=[3]))
    assert flipped.is_contiguous(memory_format=torch.channels_last)


def test_train_step_outputs_schedule_and_joint_forward() -> None:
    torch.manual_seed(4)
    v = torch.randn(6, 1, 2, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    losses = []
    for joint in (False, True):
        method = nla_with(epochs=4, joint_forward=joint)
        phase = Phase("train", 4)
        with method.ctx.at("train", 1):
            method.on_epoch_start(phase, 1)
        with torch.no_grad():
            expected = method.losses(method.net(v).float(), method.net(torch.flip(v, dims=[3])).float(), y)
        out = method.train_step(Batch(v, y, torch.arange(6)), phase, 1)
        losses.append(out["loss"].item())
        assert out["loss"].item() == pytest.approx(expected["loss"].item(), abs=1e-6)
        assert set(out) == {"loss", "loss_ce", "loss_naw", "loss_jsd", "eps", "correct_share", "sample_score",
                            "logits"}
        assert out["eps"].item() == pytest.approx(1 - math.exp(-15 / 4), abs=1e-6)
        assert out["correct_share"].item() == pytest.approx(expected["correct"].float().mean().item())
        assert torch.allclose(out["sample_score"], expected["weights"]) and out["logits"].shape == (6, 3)
        assert not any(t.requires_grad for t in out.values())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)  # no BatchNorm: one pass equals two
    assert NLA.passes_per_step == 2.0


def test_equivalent_settings_share_one_run_id() -> None:
    hp = NLA.HParams
    assert NLA.canonical(hp(fidelity="code", jsd_scale=8.0)) == NLA.canonical(hp(fidelity="code"))
    assert NLA.canonical(hp(lam_c=0.0, jsd="probabilities", jsd_scale=4.0)) == NLA.canonical(hp(lam_c=0.0))
    assert NLA.canonical(hp(lam_b=0.0, detach_weight=True)) == NLA.canonical(hp(lam_b=0.0))
    assert NLA.canonical(hp(jsd_scale=8.0)).jsd_scale == 8.0
    assert NLA.canonical(hp(detach_weight=True)).detach_weight


def test_under_bf16_autocast_and_channels_last_the_losses_stay_float32() -> None:
    """The CUDA path's logic on the CPU: bf16 autocast around train_step, channels_last batches."""
    torch.manual_seed(0)
    ctx = stub_context(num_classes=3, networks=lambda num_classes=None: timm.create_model(
        BACKBONE, pretrained=False, num_classes=3).to(memory_format=torch.channels_last))
    method = NLA()
    method.build(ctx)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = method.train_step(Batch(x, torch.tensor([0, 1, 2, 0]), torch.arange(4)), PHASE, 0)
    assert out["loss_jsd"].dtype == torch.float32 and out["sample_score"].dtype == torch.float32
    assert torch.isfinite(out["loss"])


def test_conformance_of_the_code_form(tmp_path) -> None:
    from nlbench.testing import check_method

    report = check_method(NLA, {"fidelity": "code", "detach_weight": True}, tmp_path=tmp_path, epochs=2,
                          backbone=BACKBONE)
    assert report.result["hparams"]["fidelity"] == "code"
    assert report.result["cost"]["pass_epochs"] == 4.0
    assert report.result["diagnostics"]["score_noisy"] is not None
    eps = [record["train"]["eps"] for record in report.history]
    assert eps == pytest.approx([0.0, 1 - math.exp(-7.5)], abs=1e-6)


@pytest.mark.slow
def test_a_resumed_run_equals_a_whole_one(cli, tmp_path) -> None:
    """eps(e) is set from the epoch at its start and the network is checkpointed: a run stopped after
    its first epoch resumes exactly."""
    from conftest import TINY, whole_and_resumed

    a, b = whole_and_resumed(cli, tmp_path, ["run", "--method", "nla", "--epochs", "3", "--noise", "0.3", *TINY])
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]
    assert a["diagnostics"]["eps"] > 0
