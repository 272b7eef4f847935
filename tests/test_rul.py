"""RUL: uncertainty, mixing weights, the add-up loss, pairing, heads, evaluation path (design Part C.4)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import timm
import torch
from torch import nn

from conftest import TINY, whole_and_resumed
from nlbench import Batch, Phase
from nlbench.context import LabelStore
from nlbench.lib.selection import Relabeller
from nlbench.plugins import get_registry
from nlbench.testing import stub_context

RUL = get_registry().method("rul")
rul = sys.modules[RUL.__module__]
PHASE = Phase("train", 20)
SWAP = torch.tensor([1, 0])


def identity_fc() -> nn.Linear:
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(2))
    return fc


class FcOnly(nn.Module):
    """Stands in for RULNet where only fc matters (the loss of given mu and log s^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = identity_fc()


def rul_on_fc() -> RUL:
    method = RUL()
    method.net = FcOnly()
    return method


def test_uncertainty_is_the_mean_of_exp_log_var() -> None:
    log_var = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]])
    assert torch.exp(rul.log_uncertainty(log_var)).tolist() == pytest.approx([2.0, 1.0], abs=1e-6)


def test_weights_and_mixing_of_a_swapped_pair() -> None:
    log_u = torch.log(torch.tensor([2.0, 1.0]))
    weights = rul.mixing_weights(log_u, SWAP)
    assert weights.tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-6)
    mu = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    assert rul.mix(mu, weights, SWAP).tolist() == [pytest.approx([2.0, 1.0], abs=1e-6)] * 2


def test_add_up_loss_of_the_worked_pair() -> None:
    method = rul_on_fc()
    mu = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    log_var = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]])
    terms = method.losses(mu, log_var, torch.tensor([0, 1]), SWAP)
    # z = [2, 1] for both rows.
    assert terms["loss"].item() == pytest.approx(0.5 + math.log(1 + math.exp(-1)), abs=1e-6)
    assert terms["loss"].item() == pytest.approx(0.813262, abs=1e-6)


def test_self_pairing_is_plain_cross_entropy() -> None:
    method = rul_on_fc()
    mu = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    terms = method.losses(mu, torch.randn(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert terms["weights"].tolist() == [0.5, 0.5]
    assert terms["loss"].item() == pytest.approx(math.log(1 + math.exp(-3)), abs=1e-6)
    assert terms["loss"].item() == pytest.approx(0.048587, abs=1e-6)


def test_the_loss_raises_the_uncertainty_of_the_hard_sample() -> None:
    method = rul_on_fc()
    mu = torch.tensor([[4.0, 0.0], [0.0, 1.0]])  # sample 1 easy (y = 0), sample 2 hard (y = 1)
    y = torch.tensor([0, 1])

    def loss(s: torch.Tensor) -> torch.Tensor:
        log_var = torch.stack([torch.zeros(2), s.expand(2)])
        return method.losses(mu, log_var, y, SWAP)["loss"]

    assert loss(torch.tensor(0.0)).item() == pytest.approx(0.5 * math.log(2 + math.exp(1.5) + math.exp(-1.5)), abs=1e-6)
    assert loss(torch.tensor(0.0)).item() == pytest.approx(0.951413, abs=1e-6)
    # u2 / u1 = 4: w_1 = 0.2, both mixed features are (0.8, 0.8): the minimum, ln 2.
    assert loss(torch.tensor(math.log(4))).item() == pytest.approx(math.log(2), abs=1e-6)
    for s in (math.log(3), math.log(5)):
        assert loss(torch.tensor(s)).item() > math.log(2)
    s = torch.tensor(0.0, requires_grad=True)
    loss(s).backward()
    assert s.grad.item() == pytest.approx(-0.396968, abs=1e-6)
    assert s.grad.item() == pytest.approx(0.5 * math.tanh(0.75) * -1.25, abs=1e-6)


def test_weights_are_finite_where_the_direct_ratio_overflows() -> None:
    log_var = torch.tensor([[100.0, 100.0], [99.0, 99.0]])
    weights = rul.mixing_weights(rul.log_uncertainty(log_var), SWAP)
    assert weights.tolist() == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))], abs=1e-6)
    u = torch.exp(log_var).mean(dim=1)
    assert torch.isnan(u / (u + u[SWAP])).all()  # the direct form in float32
    moderate = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]])
    u = torch.exp(moderate).mean(dim=1)
    assert torch.allclose(rul.mixing_weights(rul.log_uncertainty(moderate), SWAP), u / (u + u[SWAP]), atol=1e-7)


def timm_trunks(num_classes=None):
    return timm.create_model("resnet18", pretrained=False, num_classes=3)


def built_rul(image_size: int = 32, labels=None, **hp) -> RUL:
    ctx = stub_context(num_classes=3, labels=labels, networks=timm_trunks, batch_size=8)
    ctx.settings = ctx.settings.__class__(**{**ctx.settings.__dict__, "image_size": image_size})
    method = RUL(RUL.HParams(**hp))
    method.build(ctx)
    return method


@pytest.mark.parametrize(("size", "inputs"), [(224, 25088), (16, 512), (48, 2048)])
def test_head_size_follows_the_feature_map(size: int, inputs: int) -> None:
    trunk = timm.create_model("resnet18", pretrained=False, num_classes=0)
    shape = RUL.feature_shape(trunk, size, torch.device("cpu"))
    assert shape == (512, math.ceil(size / 32), math.ceil(size / 32))
    net = rul.RULNet(trunk, shape, 7)
    linear = [m for m in net.mu if isinstance(m, nn.Linear)][0]
    assert (linear.in_features, linear.out_features) == (inputs, 64)
    assert net.fc.in_features == 64 and net.fc.out_features == 7


def test_parameter_groups_fc_takes_the_classifier_lr() -> None:
    method = built_rul()
    settings = method.ctx.settings
    groups = method.optimizer.param_groups
    fc_ids = {id(p) for p in method.net.fc.parameters()}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= fc_ids or not (ids & fc_ids)
        assert group["lr"] == (settings.classifier_lr if ids <= fc_ids else settings.backbone_lr)
    rest = {id(p) for p in method.net.parameters()} - fc_ids
    assert rest == {id(p) for g in groups if g["lr"] == settings.backbone_lr for p in g["params"]}


def test_eval_path_is_deterministic_batch_independent_and_skips_the_log_var_head() -> None:
    method = built_rul()
    calls = []
    method.net.log_var.register_forward_hook(lambda *args: calls.append(1))
    method.net.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        first = method.predict(x)
        assert torch.equal(first, method.predict(x))
        assert torch.allclose(first[:1], method.predict(x[:1]), atol=1e-5)
    assert first.shape == (5, 3) and not calls


def test_training_logits_are_fc_of_the_unmixed_features_of_the_same_forward() -> None:
    method = built_rul(labels=np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    method.net.train()
    with method.ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    seen = {}
    method.net.mu.register_forward_hook(lambda module, args, output: seen.update(mu=output.detach()))
    fc_before = nn.Linear(64, 3)
    fc_before.load_state_dict(method.net.fc.state_dict())
    x = torch.randn(8, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    out = method.train_step(Batch(x, y, torch.arange(8)), PHASE, 0)
    with torch.no_grad():
        assert torch.allclose(out["logits"], fc_before(seen["mu"]), atol=1e-6)
    assert out["sample_score"].shape == (8,) and out["logits"].shape == (8, 3)
    assert not torch.equal(method.net.fc.weight, fc_before.weight)  # the step happened


def test_a_single_sample_batch_is_skipped_not_a_crash() -> None:
    method = built_rul()
    with method.ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    out = method.train_step(Batch(torch.randn(1, 3, 32, 32), torch.tensor([0]), torch.tensor([0])), PHASE, 0)
    assert out["loss"].item() == 0.0 and out["skipped_single_batch"].item() == 1.0
    from nlbench.errors import ConfigError
    from nlbench.spec import build_hparams

    with pytest.raises(ConfigError, match="at least 2 samples"):
        build_hparams(RUL, {}, epochs=2, noise_rate=0.2, batch_size=1)


def test_different_label_pairing() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2, 1, 0])
    for _ in range(20):
        partner = rul.different_label_partners(labels, gen)
        assert (labels[partner] != labels).all()
    # Uniform over the allowed partners: sample 0 (label 0) has 6 candidates.
    counts = torch.bincount(torch.stack([rul.different_label_partners(labels, gen)[0] for _ in range(3000)]),
                            minlength=10)
    assert counts[[0, 1, 5, 9]].sum() == 0 and counts[[2, 3, 4, 6, 7, 8]].min() > 400
    same = torch.zeros(6, dtype=torch.long)
    assert rul.different_label_partners(same, gen).tolist() == list(range(6))
    method = rul_on_fc()
    mu = torch.tensor([[3.0, 0.0], [1.0, 3.0]])
    terms = method.losses(mu, torch.randn(2, 2), torch.tensor([0, 0]), rul.different_label_partners(
        torch.tensor([0, 0]), gen))
    plain = torch.nn.functional.cross_entropy(mu, torch.tensor([0, 0]))
    assert terms["loss"].item() == pytest.approx(plain.item(), abs=1e-6)


def test_relabeller_rule_timing_and_repeated_samples() -> None:
    store = LabelStore(np.array([0, 0, 0, 0]), torch.device("cpu"))
    relabeller = Relabeller(store, threshold=0.2)
    relabeller.start_epoch(active=False)
    confident = torch.log(torch.tensor([[0.1, 0.8, 0.1]]))
    assert not relabeller.observe(confident, torch.tensor([0]), torch.tensor([0])).any()
    relabeller.start_epoch(active=True)
    # Gap 0.8 - 0.1 = 0.7 > 0.2: flagged; gap 0.45 - 0.35 = 0.1: not flagged.
    logits = torch.log(torch.tensor([[0.1, 0.8, 0.1], [0.35, 0.45, 0.2]]))
    assert relabeller.observe(logits, torch.tensor([0, 0]), torch.tensor([0, 1])).tolist() == [True, False]
    assert store.current.tolist() == [0, 0, 0, 0]  # applied at the end of the epoch
    # Sample 0 again, now confidently class 2: the last flagged prediction wins.
    relabeller.observe(torch.log(torch.tensor([[0.1, 0.1, 0.8]])), torch.tensor([0]), torch.tensor([0]))
    assert relabeller.finish_epoch() == {"relabelled_epoch": 1.0}
    assert store.current.tolist() == [2, 0, 0, 0]


def test_rul_relabels_on_the_unmixed_logits() -> None:
    method = built_rul(labels=np.array([0, 1, 2, 0, 1, 2, 0, 1]), relabel=True, relabel_epoch=1)
    with method.ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    seen = []
    observe = method.relabeller.observe
    method.relabeller.observe = lambda logits, *args: seen.append(logits) or observe(logits, *args)
    out = method.train_step(Batch(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
                                  torch.arange(8)), PHASE, 0)
    assert len(seen) == 1 and torch.equal(seen[0], out["logits"])  # fc(mu), not fc(m)


def test_rul_relabels_from_its_start_epoch_only() -> None:
    method = built_rul(relabel=True, relabel_epoch=3)
    for epoch, active in ((0, False), (1, False), (2, True)):
        with method.ctx.at("train", epoch):
            method.on_epoch_start(PHASE, epoch)
        assert method.relabeller.active is active
    # Without relabel, its settings do not enter the run id.
    assert RUL.canonical(RUL.HParams(relabel_threshold=0.5)) == RUL.HParams()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rul", "eac"])
def test_a_resumed_run_equals_a_whole_one(cli, tmp_path, method: str) -> None:
    """RUL's dropout draws from the global generator, reseeded every epoch; EAC draws its erasing
    from per-epoch generators: a resumed run equals an uninterrupted one."""
    args = ["run", "--method", method, "--epochs", "2", "--noise", "0.3", *TINY,
            *(["--set", "train.augmentation=none"] if method == "eac" else [])]  # EAC then erases itself
    a, b = whole_and_resumed(cli, tmp_path, args)
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]
    assert a["diagnostics"]["score_noisy"] is not None


def test_uncertainty_stays_float32_under_bf16_autocast() -> None:
    method = built_rul(labels=np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    with method.ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mu, log_var = method.net(x)
        assert mu.dtype == torch.bfloat16
        terms = method.losses(mu, log_var, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.arange(8).flip(0))
        out = method.train_step(Batch(x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.arange(8)), PHASE, 0)
    assert terms["log_u"].dtype == torch.float32 and terms["weights"].dtype == torch.float32
    assert torch.isfinite(out["loss"]) and out["sample_score"].dtype == torch.float32


def test_conformance_with_different_label_pairs_and_relabelling(tmp_path) -> None:
    from nlbench.testing import check_method

    report = check_method(RUL, {"pairing": "different_label", "relabel": True, "relabel_epoch": 1},
                          tmp_path=tmp_path, epochs=2)
    assert report.result["hparams"]["pairing"] == "different_label"
    assert "relabelled_epoch" in report.result["diagnostics"]
