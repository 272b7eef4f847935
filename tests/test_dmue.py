"""DMUE: the hand-computed values of the design's Part D.4, the small-class rule, optimised
parameters, the deployable state and the conformance check."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import TINY, whole_and_resumed
from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.lib.dmue import (
    batch_has_every_class_twice,
    branch_members,
    class_mean_cosines,
    insert_class,
    ramp_down,
    ramp_epochs,
    ramp_up,
    scale_rows,
    scaled_cross_entropy,
    soft_loss,
    soft_targets,
    sp_loss,
    total_loss,
    uncertainty_inputs,
)
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context
from nlbench.train.transfer import load_deployable

DMUE = get_registry().method("dmue")
dmue = sys.modules[DMUE.__module__]
PHASE = Phase("train", 10)
# The test ResNet (a 0.4M-parameter timm model) keeps the built-network tests fast and proves
# DMUE does not assume ResNet-18's sizes; the conformance check below uses ResNet-18.
BACKBONE = "test_resnet" if "test_resnet" in timm.list_models("test_resnet*") else "resnet18"


def built(labels=(0, 0, 1, 2) * 4, num_classes: int = 3, backbone: str = BACKBONE, seed: int = 0,
          balanced: bool = False, **hp) -> object:
    """A DMUE built on a stub context with a real timm ResNet, at epoch 0, in train mode."""
    ctx = stub_context(num_classes=num_classes, labels=np.array(labels), seed=seed, batch_size=8,
                       networks=lambda n=None: timm.create_model(backbone, num_classes=num_classes))
    ctx.settings = ctx.settings.__class__(**{**ctx.settings.__dict__, "image_size": 32,
                                              "balanced_sampling": balanced})
    method = DMUE(DMUE.HParams(**hp))
    method.build(ctx)
    with ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    for module in method.modules():
        module.train()
    return method


def _log(*p: float) -> torch.Tensor:
    return torch.log(torch.tensor([p], dtype=torch.float64)).float()


# -- D.4 1-5: the split, the latent distribution, the losses, the ramps ---------------------------
def test_branch_one_sees_the_other_classes_with_remapped_targets() -> None:
    rows, targets = branch_members(torch.tensor([0, 2, 3, 1]), 1)
    assert rows.tolist() == [0, 1, 2] and targets.tolist() == [0, 1, 2]
    rows, targets = branch_members(torch.tensor([0, 2, 3, 1]), 3)
    assert rows.tolist() == [0, 1, 3] and targets.tolist() == [0, 2, 1]


def test_soft_label_is_the_sharpened_branch_output_with_zero_at_its_class() -> None:
    q = soft_targets(_log(1 / 6, 2 / 6, 3 / 6), 1, 1.2)
    # (1, 2^(1/1.2), 3^(1/1.2)) / 5.279847
    assert q[0].tolist() == pytest.approx([0.189399, 0.0, 0.337471, 0.473129], abs=1e-6)
    assert 1 + 2 ** (1 / 1.2) + 3 ** (1 / 1.2) == pytest.approx(5.279847, abs=1e-6)
    assert insert_class(torch.tensor([[0.5, 0.5]]), 0).tolist() == [[0.0, 0.5, 0.5]]
    assert insert_class(torch.tensor([[0.5, 0.5]]), 2).tolist() == [[0.5, 0.5, 0.0]]


def test_soft_loss_of_the_worked_example_and_unused_rows_leave_it() -> None:
    targets = torch.tensor([[0.189399, 0.0, 0.337471, 0.473129]])
    loss = soft_loss(_log(0.1, 0.6, 0.2, 0.1), torch.tensor([1]), targets, torch.tensor([True]))
    # ((-0.089399)^2 + 0 + (-0.137471)^2 + (-0.373129)^2) / 4
    assert loss.item() == pytest.approx(0.041529, abs=1e-6)
    logits = torch.cat([_log(0.1, 0.6, 0.2, 0.1), _log(0.7, 0.1, 0.1, 0.1)])
    two = soft_loss(logits, torch.tensor([1, 3]), torch.cat([targets, torch.zeros(1, 4)]), torch.tensor([True, False]))
    assert two.item() == pytest.approx(0.041529, abs=1e-6)
    none = soft_loss(logits, torch.tensor([1, 3]), torch.zeros(2, 4), torch.tensor([False, False]))
    assert none.item() == 0.0


def test_similarity_preserving_loss() -> None:
    eye = torch.eye(2)
    assert sp_loss(eye, torch.tensor([[1.0, 1.0], [1.0, -1.0]])).item() == pytest.approx(0.0, abs=1e-7)
    # rows of the target Gram (1/sqrt 2, 1/sqrt 2): ((1 - 0.707107)^2 * 2 + 0.707107^2 * 2) / 4
    assert sp_loss(eye, torch.tensor([[1.0, 0.0], [1.0, 0.0]])).item() == pytest.approx(0.292893, abs=1e-6)
    # Gram rows differ only in row 2: (1, 2)/sqrt 5 against (1, 5)/sqrt 26, so the rows (not the
    # columns) are normalised: ((0.447214 - 0.196116)^2 + (0.894427 - 0.980581)^2) / 4
    logits, features = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    assert sp_loss(logits, features).item() == pytest.approx(0.017618, abs=1e-6)


def test_ramps() -> None:
    assert ramp_up(0, 6) == pytest.approx(0.006738, abs=1e-6)
    assert ramp_up(3, 6) == pytest.approx(0.286505, abs=1e-6)
    assert ramp_up(6, 6) == ramp_up(7, 6) == 1.0
    assert ramp_down(5, 6) == ramp_down(6, 6) == 1.0
    assert ramp_down(12, 6) == pytest.approx(0.778801, abs=1e-6)
    assert ramp_down(35, 6) == pytest.approx(0.503319, abs=1e-6)
    # a = max(1, round(E / 6)), half up: the code's 6 of 36 epochs.
    assert [ramp_epochs(0, e) for e in (36, 40, 15, 2)] == [6, 7, 3, 1]
    assert ramp_epochs(9, 36) == 9


def test_total_loss_and_the_scaled_cross_entropy() -> None:
    one = torch.tensor
    loss = total_loss(one(1.0), one(0.1), one(0.001), one(2.0), up=0.5, down=0.25, soft_weight=0.5, sp_weight=1000)
    assert loss.item() == pytest.approx(0.5 * (1 + 0.05 + 1) + 0.5, abs=1e-6)
    # s z = (1, 0): ln(1 + e^-1)
    ce = scaled_cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0.5]), torch.tensor([0]))
    assert ce.item() == pytest.approx(0.313262, abs=1e-6)


# -- D.4 6: pairwise statistics --------------------------------------------------------------------
def test_pairwise_statistics_scaled_per_row_and_a_flat_row_is_zero() -> None:
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    means, present = class_mean_cosines(f, y, 2)
    assert means.tolist() == [pytest.approx(r, abs=1e-6) for r in ([0.8, 0.0], [0.8, 0.8], [0.4, 1.0])]
    assert scale_rows(means, present).tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]  # code: NaN row 2
    # A third class absent from the batch: its column is 0 and takes no part in the scaling.
    inputs = uncertainty_inputs(f, y, 3)
    assert inputs[:, :3].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert inputs[:, 3:].tolist() == F.one_hot(y, 3).float().tolist()
    # A zero feature (possible after ReLU) has cosine 0, not NaN.
    zero = class_mean_cosines(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]), 2)[0]
    assert torch.isfinite(zero).all()


# -- D.4 7: small classes ----------------------------------------------------------------------------
def _branch_calls(method) -> list[list[int]]:
    calls: list[list[int]] = [[] for _ in method.aux.branches]
    for c, branch in enumerate(method.aux.branches):
        branch.register_forward_hook(lambda _m, args, _o, c=c: calls[c].append(int(args[0].shape[0])))
    return calls


def test_small_classes_are_masked_per_class() -> None:
    method = built()
    calls = _branch_calls(method)
    y = torch.tensor([0, 0, 1, 2])
    counts = torch.bincount(y, minlength=3).tolist()
    x3 = method.net.trunk(torch.randn(4, 3, 32, 32))
    _, rows = method.latent_distributions(x3, y, counts)
    assert rows.tolist() == [True, True, False, False]  # L_soft over rows 0, 1
    assert calls == [[2], [], []]  # a latent-distribution pass for class 0 only
    calls[0].clear()
    out = method.train_step(Batch(torch.randn(4, 3, 32, 32), y, torch.arange(4)), PHASE, 0)
    assert calls == [[2, 2], [3], [3]]  # every auxiliary branch (|A_c| = 2, 3, 3), then class 0's latent pass
    assert torch.isfinite(out["loss"]) and out["skipped_batch"].item() == 0 and out["small_classes"].item() == 2


def test_a_branch_without_two_samples_is_left_out() -> None:
    method = built()
    calls = _branch_calls(method)
    out = method.train_step(Batch(torch.randn(3, 3, 32, 32), torch.tensor([0, 0, 1]), torch.arange(3)), PHASE, 0)
    # A_0 = {2} is too small; A_1 = {0, 1} and A_2 = all three train; class 0's latent pass on branch 0.
    assert calls == [[2], [2], [3]] and torch.isfinite(out["loss"])


def test_code_fidelity_skips_a_batch_without_every_class_twice() -> None:
    assert not batch_has_every_class_twice([2, 1, 1]) and batch_has_every_class_twice([2, 2, 2])
    method = built(fidelity="code")
    before = [p.detach().clone() for p in method.net.parameters()]
    out = method.train_step(Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 2]), torch.arange(4)), PHASE, 0)
    assert out["loss"].item() == 0.0 and out["skipped_batch"].item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, method.net.parameters()))
    out = method.train_step(Batch(torch.randn(6, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(6)),
                            PHASE, 0)
    assert out["skipped_batch"].item() == 0.0 and out["loss"].item() > 0


def test_a_single_sample_batch_is_skipped_not_a_crash() -> None:
    out = built().train_step(Batch(torch.randn(1, 3, 32, 32), torch.tensor([0]), torch.tensor([0])), PHASE, 0)
    assert out["loss"].item() == 0.0 and out["skipped_batch"].item() == 1.0


# -- gradients and optimised parameters (D.4 8) ---------------------------------------------------
def test_the_soft_labels_are_targets_without_gradient() -> None:
    method = built()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    terms = method.losses(torch.randn(6, 3, 32, 32), y, torch.bincount(y, minlength=3).tolist())
    terms["loss_soft"].backward()
    assert all(p.grad is None for p in method.aux.branches.parameters())
    assert all(p.grad is None for p in method.aux.heads.parameters())
    assert method.net.fc.weight.grad is not None and method.net.fc.weight.grad.abs().sum() > 0


def test_the_scores_reach_the_target_features() -> None:
    """CE(s z) trains U and, through the cosine statistics, the target branch (the code does not detach)."""
    method = built()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    terms = method.losses(torch.randn(6, 3, 32, 32), y, torch.bincount(y, minlength=3).tolist())
    logits = terms["logits"].detach()
    ce = scaled_cross_entropy(logits, terms["scores"], y)  # z fixed: only the s path has a gradient
    ce.backward()
    assert method.aux.uncertainty[0].weight.grad.abs().sum() > 0
    # (timm zero-initialises each block's last BN scale, so its convs get no gradient yet; the block does)
    assert sum(p.grad.abs().sum() for p in method.net.layer4.parameters()) > 0
    assert terms["scores"].shape == (6,) and ((terms["scores"] > 0) & (terms["scores"] < 1)).all()


@pytest.mark.parametrize(("fidelity", "trained"), [("paper", True), ("code", False)])
def test_uncertainty_head_and_neck_are_trained_unless_code_fidelity(fidelity: str, trained: bool) -> None:
    method = built(fidelity=fidelity)
    u_before = method.aux.uncertainty[0].weight.detach().clone()
    neck_before = method.net.neck.weight.detach().clone()
    fc_before = method.net.fc.weight.detach().clone()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    method.train_step(Batch(torch.randn(6, 3, 32, 32), y, torch.arange(6)), PHASE, 0)
    assert (not torch.equal(method.aux.uncertainty[0].weight, u_before)) is trained
    assert (not torch.equal(method.net.neck.weight, neck_before)) is trained
    assert not torch.equal(method.net.fc.weight, fc_before)
    assert torch.equal(method.net.neck.bias, torch.zeros_like(method.net.neck.bias))  # fixed at 0


def test_parameter_groups() -> None:
    method = built()
    settings = method.ctx.settings
    head = {id(p) for m in (method.net.fc, method.aux.heads, method.aux.uncertainty) for p in m.parameters()}
    head.add(id(method.net.neck.weight))
    groups = method.optimizer.param_groups
    in_groups = {id(p) for g in groups for p in g["params"]}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert group["lr"] == (settings.classifier_lr if ids <= head else settings.backbone_lr)
        assert ids <= head or not ids & head
    assert id(method.net.neck.bias) not in in_groups
    every = {id(p) for m in method.modules() for p in m.parameters()}
    assert in_groups == every - {id(method.net.neck.bias)}


def test_network_layout_and_initialisation() -> None:
    method = built(backbone="resnet18", labels=list(range(7)) * 3, num_classes=7)
    assert len(method.aux.branches) == 7 and method.aux.branches[0] is not method.net.layer4
    assert all(h.out_features == 6 and h.bias is None for h in method.aux.heads)
    assert method.net.fc.out_features == 7 and method.net.fc.bias is None
    assert method.net.fc.weight.std().item() == pytest.approx(0.001, rel=0.1)
    # Every auxiliary branch starts as the trunk's layer4 (the code copies one pretrained layer4 into all).
    for branch in method.aux.branches:
        for a, b in zip(branch.state_dict().values(), method.net.layer4.state_dict().values()):
            assert torch.equal(a, b)
    assert [m.in_features for m in method.aux.uncertainty if isinstance(m, torch.nn.Linear)] == [14, 7]
    assert method.passes_per_step == dmue.step_passes(7) == 2.44
    assert method.trained_networks(PHASE) == 1


# -- D.4 9: deployment -------------------------------------------------------------------------------
def test_the_deployable_state_is_the_inference_path_only() -> None:
    method = built(seed=0)
    state = method.deployable_state()
    assert list(state) == ["net"]
    prefixes = {key.split(".")[0] for key in state["net"]}
    assert prefixes == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "neck", "fc"}
    for module in method.modules():
        module.eval()
    x = torch.randn(5, 3, 32, 32)
    calls = []
    for module in method.aux.modules():
        module.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        expected = method.predict(x)
    assert not calls and expected.shape == (5, 3)
    other = built(seed=1)  # other weights everywhere, auxiliary branches included
    load_deployable(other, state)
    other.net.eval()
    with torch.no_grad():
        assert torch.allclose(other.predict(x), expected, atol=1e-6)
        assert torch.allclose(other.predict(x[:2]), expected[:2], atol=1e-5)  # batch-independent in eval mode


def test_validate_needs_every_class_twice_in_a_batch() -> None:
    DMUE.validate(DMUE.HParams(), {"batch_size": 14, "num_classes": 7})
    with pytest.raises(ValueError, match="batch_size >= 2 x the 7 classes"):
        DMUE.validate(DMUE.HParams(), {"batch_size": 13, "num_classes": 7})
    with pytest.raises(ValueError, match="batch_size >= 2 x the 2 classes"):  # K unknown: K >= 2
        DMUE.validate(DMUE.HParams(), {"batch_size": 3})
    with pytest.raises(ConfigError, match="batch_size >= 2 x the 8 classes"):
        build_hparams(DMUE, {}, epochs=2, noise_rate=0.2, batch_size=15, run_settings={"num_classes": 8})
    assert build_hparams(DMUE, {}, epochs=2, noise_rate=0.2, batch_size=16,
                         run_settings={"num_classes": 8}) == DMUE.HParams()


def test_a_rare_class_without_balanced_sampling_warns() -> None:
    labels = [0] * 60 + [1] * 39 + [2]  # class 2: 1 % of the training set
    with pytest.warns(UserWarning, match="balanced_sampling is off"):
        built(labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        built(labels=labels, balanced=True)
        built()


# -- engine ------------------------------------------------------------------------------------------
def test_conformance_through_the_small_class_rule(tmp_path) -> None:
    from nlbench.testing import check_method

    # Batches of 16 over synthfer's 7 classes (2 x 7 is the smallest batch validate allows once it
    # knows K): most batches hold some class fewer than twice, so the masking rule runs.
    report = check_method(DMUE, tmp_path=tmp_path, epochs=2, backbone=BACKBONE, train={"batch_size": 16})
    first, second = (r["train"] for r in report.history)
    assert {"loss_ce", "loss_soft", "loss_sp", "loss_aux", "ramp_up", "ramp_down", "small_classes",
            "score_clean", "acc_clean"} <= set(first)
    assert first["small_classes"] > 0 and second["small_classes"] > 0
    assert first["ramp_up"] == pytest.approx(math.exp(-5)) and second["ramp_up"] == 1.0  # a = 1 of 2 epochs
    assert first["skipped_batch"] == 0.0
    assert report.result["cost"]["pass_epochs"] == pytest.approx(2.44 * 2)
    assert report.result["cost"]["network_epochs"] == 2


def test_the_cli_lists_dmue_with_its_options_and_search_space(cli) -> None:
    listed = cli("methods", "dmue")
    assert listed.code == 0, listed.err
    for option in ("soft_weight", "sp_weight", "temperature", "ramp_epochs", "dropout", "fidelity"):
        assert option in listed.out
    assert "tuned by" in listed.out and listed.out.count("sp_weight") == 2  # option and search space


@pytest.mark.slow
def test_a_resumed_run_equals_a_whole_one(cli, tmp_path) -> None:
    """Dropout draws from the global generator, reseeded every epoch; the ramps follow the epoch:
    a resumed run equals an uninterrupted one."""
    args = ["run", "--method", "dmue", "--epochs", "2", "--noise", "0.3", *TINY]
    a, b = whole_and_resumed(cli, tmp_path, args)
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]
