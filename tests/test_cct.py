"""CCT: the lambda schedule, the consensus loss and the distillation loss on worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from nlbench.lib.schedules import cct_lambda
from nlbench.plugins import get_registry


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


def test_consensus_loss_three_networks_by_hand_keeps_the_papers_ratio(cct_cls):
    # N = 3: L_sup = (1/3) sum of 3 CEs and L_cons = (1/3) sum over the 6 ordered pairs (the ratio
    # of the paper's plain sums and the code's 0.33); dividing L_cons by 6 would halve its weight.
    z = [[2.0, 0.0, -1.0], [0.5, 1.0, 0.0], [-1.0, 0.0, 3.0]]
    y = 1
    p = [_softmax(v) for v in z]
    ces = [-math.log(pi[y]) for pi in p]
    kls = [_kl(p[k], p[j]) for j in range(3) for k in range(3) if j != k]
    lam = 0.6
    method = _method(cct_cls, networks=3)
    terms = method.consensus_loss([torch.tensor([v]) for v in z], torch.tensor([y]), lam)
    l_sup, l_cons = sum(ces) / 3, sum(kls) / 3
    assert terms["l_sup"].item() == pytest.approx(l_sup, rel=1e-5)
    assert terms["l_cons"].item() == pytest.approx(l_cons, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((1 - lam) * l_sup + lam * l_cons, rel=1e-5)
    mean = _method(cct_cls, networks=3, term_weights="mean")
    terms = mean.consensus_loss([torch.tensor([v]) for v in z], torch.tensor([y]), lam)
    assert terms["l_cons"].item() == pytest.approx(sum(kls) / 6, rel=1e-5)


def test_term_weight_options(cct_cls):
    assert _method(cct_cls, networks=3).term_factors() == pytest.approx((1 / 3, 1 / 3))
    assert _method(cct_cls, networks=4).term_factors() == pytest.approx((1 / 4, 1 / 4))
    assert _method(cct_cls, networks=3, term_weights="mean").term_factors() == pytest.approx((1 / 3, 1 / 6))
    assert _method(cct_cls, networks=3, term_weights="code").term_factors() == pytest.approx((0.33, 0.33))


def test_consistency_gradient_has_no_stop_gradient(cct_cls):
    # lambda = 1 and N = 2 leave (1/2)(KL(p2 || p1) + KL(p1 || p2)). Its gradient in z1 is
    # (1/2)[(p1 - p2) + p1 * (log p1 - log p2 - KL(p1 || p2))]; detaching either side of a KL
    # drops one of the two parts.
    method = _method(cct_cls, networks=2)
    z1 = torch.tensor([[0.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    method.consensus_loss([z1, z2], torch.tensor([0]), 1.0)["loss"].backward()
    p1, p2 = (0.5, 0.5), (0.75, 0.25)
    kl_12 = sum(a * math.log(a / b) for a, b in zip(p1, p2))
    kl_21 = sum(b * math.log(b / a) for a, b in zip(p1, p2))
    grad1 = [0.5 * ((a - b) + a * (math.log(a / b) - kl_12)) for a, b in zip(p1, p2)]
    grad2 = [0.5 * ((b - a) + b * (math.log(b / a) - kl_21)) for a, b in zip(p1, p2)]
    assert z1.grad[0].tolist() == pytest.approx(grad1, abs=1e-6)
    assert z2.grad[0].tolist() == pytest.approx(grad2, abs=1e-6)


def test_supervision_off_uses_only_the_consistency_term(cct_cls):
    method = _method(cct_cls, networks=2, supervision=False)
    z = [[1.0, 0.0], [0.0, 1.0]]
    p = [_softmax(v) for v in z]
    terms = method.consensus_loss([torch.tensor([v]) for v in z], torch.tensor([0]), 0.5)
    assert terms["loss"].item() == pytest.approx(0.5 * (_kl(p[1], p[0]) + _kl(p[0], p[1])) / 2, rel=1e-5)


def test_consistency_off_trains_independent_networks_then_distils(cct_cls):
    from nlbench.testing import stub_context

    method = _method(cct_cls, networks=3, consistency=False)
    method.build(stub_context(epochs=10))
    train, distill = method.phases()
    for epoch in (0, 5, 9):
        method.on_epoch_start(train, epoch)
        assert method.lam == 0.0
    z = [[2.0, 0.0, -1.0], [0.5, 1.0, 0.0], [-1.0, 0.0, 3.0]]
    terms = method.consensus_loss([torch.tensor([v]) for v in z], torch.tensor([2]), method.lam)
    assert terms["loss"].item() == pytest.approx(sum(-math.log(_softmax(v)[2]) for v in z) / 3, rel=1e-5)
    assert distill.name == "distill"
    on = _method(cct_cls, networks=3)
    on.build(stub_context(epochs=10))
    on.on_epoch_start(train, 0)
    assert on.lam == pytest.approx(0.470, abs=5e-4)


def test_one_network_is_standard_without_distillation(cct_cls):
    from nlbench.testing import stub_context

    for consistency in (True, False):
        method = _method(cct_cls, networks=1, consistency=consistency)
        method.build(stub_context(epochs=10))
        assert [p.name for p in method.phases()] == ["train"]
        method.on_epoch_start(method.phases()[0], 5)
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        with torch.no_grad():
            expected = torch.nn.functional.cross_entropy(method.nets[0](x), y)
        assert method.consensus_loss([method.nets[0](x)], y, method.lam)["loss"].item() == pytest.approx(
            expected.item(), rel=1e-6)
        assert not hasattr(method, "student") and "student" not in method.deployable_state()


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


@pytest.mark.parametrize("target", ["teachers", "none"])
def test_distillation_hard_target_options(cct_cls, target):
    teachers = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.5, 0.0]]  # mean softmax argmax: class 1
    student = [1.0, -1.0, 0.5]
    u = 2.0
    p_s = _softmax(student, u)
    soft = sum(-sum(q * math.log(p) for q, p in zip(_softmax(t, u), p_s)) for t in teachers)
    method = _method(cct_cls, kd_hard_target=target)
    value = method.distillation_loss([torch.tensor([t]) for t in teachers], torch.tensor([student]),
                                     torch.tensor([0]))  # the noisy label 0 must not be used
    hard = -math.log(_softmax(student)[1]) if target == "teachers" else 0.0
    assert value.item() == pytest.approx(0.5 * soft + 0.5 * hard, rel=1e-5)


def test_lr_milestones_step_the_pipeline_lr_on_top_of_lr_decay_but_not_a_method_schedule(cct_cls):
    import dataclasses

    from nlbench.testing import stub_context

    ctx = stub_context(epochs=10)
    ctx.settings = dataclasses.replace(ctx.settings, lr_decay=0.5, lr_milestones=(2, 4))
    method = _method(cct_cls, kd_recipe="code")
    method.build(ctx)
    # hand-computed: lr(e) = 1e-3 * 0.5^e * 0.1^(milestones passed)
    for epoch, lr in ((0, 1e-3), (1, 5e-4), (2, 2.5e-5), (3, 1.25e-5), (4, 6.25e-7), (5, 3.125e-7)):
        ctx.apply_lr_schedule("train", epoch)
        assert method.optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-9)
    ctx.apply_lr_schedule("distill", 2)  # the official KD recipe's own milestones (40, 100) replace them
    assert method.student_optimizer.param_groups[0]["lr"] == pytest.approx(0.002)


def test_code_recipe_is_the_official_kd_script_and_overrides_apply(cct_cls):
    from nlbench.testing import stub_context

    ctx = stub_context(epochs=120, batch_size=256)
    method = _method(cct_cls, kd_recipe="code")
    method.build(ctx)
    optimizer = method.student_optimizer
    assert isinstance(optimizer, torch.optim.Adamax)
    assert all(g["lr"] == pytest.approx(0.002) and g["weight_decay"] == pytest.approx(4e-5)
               for g in optimizer.param_groups)
    distill = method.phases()[1]
    assert distill.batch_size == 64 and distill.epochs == 120
    for epoch, lr in ((0, 0.002), (39, 0.002), (40, 0.0002), (99, 0.0002), (100, 0.00002)):
        ctx.apply_lr_schedule("distill", epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    ctx.apply_lr_schedule("train", 2)  # the training phase keeps Adam with lr_decay per epoch
    assert isinstance(method.optimizer, torch.optim.Adam)
    assert method.optimizer.param_groups[0]["lr"] == pytest.approx(ctx.settings.backbone_lr * 0.95**2)
    custom = _method(cct_cls, kd_recipe="code", kd_lr=0.01, kd_batch_size=32, kd_weight_decay=0.0,
                     kd_optimizer="adam", distill_epochs=7)
    custom.build(stub_context(epochs=10))
    assert isinstance(custom.student_optimizer, torch.optim.Adam)
    assert custom.student_optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert custom.student_optimizer.param_groups[0]["weight_decay"] == 0.0
    assert (custom.phases()[1].batch_size, custom.phases()[1].epochs) == (32, 7)
    default = _method(cct_cls)
    default.build(stub_context(epochs=10))
    assert default.phases()[1].batch_size is None
    assert isinstance(default.student_optimizer, torch.optim.Adam)


def test_teachers_are_frozen_and_in_eval_mode_during_distillation(cct_cls):
    from nlbench import Batch
    from nlbench.testing import stub_context

    class Dropping(torch.nn.Module):  # dropout makes train mode visible in the outputs
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x):
            return self.linear(self.drop(x))

    torch.manual_seed(0)
    method = _method(cct_cls, networks=2)
    method.build(stub_context(epochs=2, networks=lambda num_classes=None: Dropping()))
    distill = method.phases()[1]
    method.start_phase(distill)
    method.train_mode(distill)
    assert all(not net.training and not any(p.requires_grad for p in net.parameters()) for net in method.nets)
    assert method.student.training
    teachers = [[p.clone() for p in net.parameters()] for net in method.nets]
    student = [p.clone() for p in method.student.parameters()]
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    out = method.train_step(Batch(x, y, torch.arange(8)), distill, 0)
    assert torch.isfinite(out["loss"])
    assert all(torch.equal(a, b) for net, before in zip(method.nets, teachers)
               for a, b in zip(net.parameters(), before))
    assert any(not torch.equal(a, b) for a, b in zip(method.student.parameters(), student))
    # In eval mode the teachers are deterministic: the same input gives the same logits twice.
    assert torch.equal(method.nets[0](x), method.nets[0](x))


def test_one_network_without_supervision_is_refused(cli):
    result = cli("run", "--method", "cct", "--set", "methods.cct.networks=1", "--set", "methods.cct.supervision=false")
    assert result.code == 2
    assert "one network with the supervision loss off" in result.err


@pytest.mark.parametrize("value", ["0", "5"])
def test_network_count_outside_1_to_4_is_refused(cli, value):
    result = cli("run", "--method", "cct", "--set", f"methods.cct.networks={value}")
    assert result.code == 2 and "methods.cct.networks must be in [1, 4]" in result.err
