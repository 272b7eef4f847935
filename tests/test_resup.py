"""ReSup: the Beta mixture and its lookup table, the swapped loss, the scan, a step, resume (hand-computed values)."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, whole_and_resumed
from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.lib.bmm import (
    BMMFit,
    beta_log_pdf,
    fit_bmm,
    lookup_bins,
    lookup_grid,
    lookup_table,
    moment_fit,
    responsibilities,
)
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context

SEVEN = torch.tensor([0.05, 0.1, 0.15, 0.8, 0.85, 0.9, 0.95], dtype=torch.float64)

ReSup = get_registry().method("resup")
_module = sys.modules[ReSup.__module__]
label_similarity = _module.label_similarity
clamp_similarity = _module.clamp_similarity
code_fit_input = _module.code_fit_input
clean_weights = _module.clean_weights
resup_loss = _module.resup_loss
warmup_loss = _module.warmup_loss


# -- similarity and lookup bins ------------------------------------------------------------------
def test_similarity_is_the_cosine_to_the_one_hot_label_and_reads_bin_88() -> None:
    s = label_similarity(torch.log(torch.tensor([[0.6, 0.3, 0.1]])), torch.tensor([0]))
    assert s.item() == pytest.approx(0.6 / math.sqrt(0.46), abs=1e-6) == pytest.approx(0.884652, abs=1e-6)
    assert lookup_bins(clamp_similarity(s)).item() == 88
    # The ends: s = 1 reads the last bin, tiny s the first.
    assert lookup_bins(torch.tensor([1.0, 0.0, 0.999, 0.0099])).tolist() == [99, 0, 99, 0]


def test_the_codes_fit_input_replaces_only_values_at_the_ends_and_reads_the_same_bins() -> None:
    s = torch.tensor([1.0, 0.9995, 0.99995, 0.5, 0.0, 0.0005])
    code = code_fit_input(s)
    assert code.tolist() == pytest.approx([0.999, 0.9995, 0.99995, 0.5, 0.001, 0.0005])
    assert clamp_similarity(s).tolist() == pytest.approx([0.999, 0.999, 0.999, 0.5, 0.001, 0.001])
    grid = torch.linspace(0, 1, 10001)
    assert torch.equal(lookup_bins(code_fit_input(grid)), lookup_bins(clamp_similarity(grid)))


# -- the Beta mixture ----------------------------------------------------------------------------
def test_moment_fit_of_three_equally_weighted_values() -> None:
    x = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)
    alphas, betas = moment_fit(x, torch.ones(1, 3, dtype=torch.float64))
    # mean 0.4, variance 0.026667: alpha = 0.4 (0.24 / 0.026667 - 1) = 3.2, beta = 3.2 * 0.6 / 0.4.
    assert alphas.item() == pytest.approx(3.2, abs=1e-9) and betas.item() == pytest.approx(4.8, abs=1e-9)


def test_one_em_iteration_from_the_codes_start() -> None:
    # Beta(1, 2) and Beta(2, 1) have densities 2(1 - x) and 2x: the clean responsibilities are r = x.
    fit = fit_bmm(SEVEN, iterations=1)
    assert fit.weights.tolist() == pytest.approx([0.457143, 0.542857], abs=1e-6)  # pi_clean = mean x = 3.8/7
    assert fit.alphas.tolist() == pytest.approx([0.262226, 1.873149], abs=1e-6)
    assert fit.betas.tolist() == pytest.approx([0.953896, 0.415586], abs=1e-6)


def test_ten_iterations_reach_the_two_clusters_moment_fits() -> None:
    fit = fit_bmm(SEVEN)
    # Noisy: mean 0.1, variance 1/600 -> (5.3, 47.7); clean: mean 0.875, variance 0.003125 -> (29.75, 4.25).
    assert fit.alphas.tolist() == pytest.approx([5.3, 29.75], abs=1e-6)
    assert fit.betas.tolist() == pytest.approx([47.7, 4.25], abs=1e-6)
    assert fit.weights.tolist() == pytest.approx([3 / 7, 4 / 7], abs=1e-6)
    assert fit.means.tolist() == pytest.approx([0.1, 0.875], abs=1e-6)
    assert fit.clean_component("mean") == 1 == fit.clean_component("index")


def test_the_e_step_floors_each_weighted_likelihood_at_1e_12() -> None:
    f64 = torch.float64
    fit = BMMFit(torch.tensor([5.3, 29.75], dtype=f64), torch.tensor([47.7, 4.25], dtype=f64),
                 torch.tensor([3 / 7, 4 / 7], dtype=f64))
    # At 0.001 the noisy component has pi f = 1.3416e-6 and the clean one ~1e-81, floored: the clean
    # responsibility is 1e-12 / (1.3416e-6 + 1e-12); at 0.9 the noisy one is 1e-12 / 4.2883.
    resp = responsibilities(torch.tensor([0.001, 0.9], dtype=f64), fit)
    assert resp[1, 0].item() == pytest.approx(1e-12 / 1.3416e-6, rel=1e-4)
    assert resp[0, 1].item() == pytest.approx(1e-12 / 4.2883, rel=1e-4)
    # Two sharp components, a value between them: both densities underflow, the floor splits it evenly.
    sharp = BMMFit(torch.tensor([100.0, 900.0], dtype=f64), torch.tensor([900.0, 100.0], dtype=f64),
                   torch.tensor([0.5, 0.5], dtype=f64))
    assert responsibilities(torch.tensor([0.5], dtype=f64), sharp)[:, 0].tolist() == [0.5, 0.5]


def test_the_lookup_table_and_its_monotone_tail() -> None:
    fit = fit_bmm(SEVEN)
    raw = fit.posterior(lookup_grid(), 1)
    assert int(torch.argmax(raw)) == 89
    table = lookup_table(fit, 1)
    assert table[80].item() == pytest.approx(1.0, abs=1e-6)
    assert table[88].item() == pytest.approx(1.0, abs=1e-6)
    assert table[99].item() == pytest.approx(1.0, abs=1e-6)
    assert table[50].item() == pytest.approx(0.999932, abs=1e-6)
    assert table[10].item() < 1e-24
    assert torch.all(table[89:] == raw.max())  # every entry from the first maximum on is the maximum
    assert raw[99] < raw.max()  # ... where the raw posterior falls again (the 1e-12 guard at x -> 1)
    assert torch.equal(table[:89], raw[:89])


def test_the_clean_component_is_the_larger_mean_not_an_index() -> None:
    fit = fit_bmm(SEVEN, alphas=(2.0, 1.0), betas=(1.0, 2.0))  # the start swapped
    assert fit.means.tolist() == pytest.approx([0.875, 0.1], abs=1e-6)
    x = torch.tensor([0.9])
    assert fit.posterior(x, fit.clean_component("index")).item() == pytest.approx(3.3e-41, rel=0.01)
    assert fit.clean_component("mean") == 0
    assert fit.posterior(x, fit.clean_component("mean")).item() == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="rule"):
        fit.clean_component("largest")


def test_the_beta_density_equals_scipys() -> None:
    stats = pytest.importorskip("scipy.stats")
    x = torch.tensor([1e-12, 1e-4, 0.05, 0.3, 0.5, 0.77, 0.999, 1 - 1e-12], dtype=torch.float64)
    for a, b in [(0.26, 0.95), (1.0, 2.0), (5.3, 47.7), (29.75, 4.25), (1e5, 3e4)]:
        ours = torch.exp(beta_log_pdf(x, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))
        theirs = stats.beta.pdf(x.numpy(), a, b)
        assert np.allclose(ours.numpy(), theirs, rtol=1e-9, atol=1e-300), (a, b)


def official_fit(x: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official BetaMixture1D.fit as a reference, re-written with loops over the components and
    scipy's Beta density (the code's): clamp, E-step with the 1e-12 floor, weighted-moment M-step."""
    stats = pytest.importorskip("scipy.stats")
    x = np.clip(x.astype(np.float64), 1e-4, 1 - 1e-4)
    alphas, betas, weights = np.array([1.0, 2.0]), np.array([2.0, 1.0]), np.array([0.5, 0.5])
    for _ in range(iterations):
        r = np.array([weights[c] * stats.beta.pdf(x, alphas[c], betas[c]) for c in range(2)])
        r[r <= 1e-12] = 1e-12
        r /= r.sum(axis=0)
        for c in range(2):
            mean = np.sum(r[c] * x) / np.sum(r[c])
            var = np.sum(r[c] * (x - mean) ** 2) / np.sum(r[c])
            alphas[c] = mean * (mean * (1 - mean) / var - 1)
            betas[c] = alphas[c] * (1 - mean) / mean
        weights = r.sum(axis=1) / r.sum()
    return alphas, betas, weights


def official_table(alphas, betas, weights, component: int) -> np.ndarray:
    """The official create_lookup: the posterior (1e-12 in the denominator) on 100 points, flat after its argmax."""
    stats = pytest.importorskip("scipy.stats")
    grid = np.linspace(1e-12, 1 - 1e-12, 100)
    weighted = [weights[c] * stats.beta.pdf(grid, alphas[c], betas[c]) for c in range(2)]
    table = weighted[component] / (weighted[0] + weighted[1] + 1e-12)
    table[np.argmax(table):] = table.max()
    return table


def similarities(seed: int, n: int = 3000, noisy: float = 0.3) -> np.ndarray:
    """Label similarities of a trained-looking network: a clean mode near 1 and a noisy mode lower."""
    rng = np.random.default_rng(seed)
    k = int(noisy * n)
    values = np.concatenate([rng.beta(20, 2, n - k), rng.beta(2, 5, k)])
    return np.clip(values, 1e-3, 1 - 1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fit_and_table_equal_the_official_ones(seed: int) -> None:
    x = similarities(seed)
    alphas, betas, weights = official_fit(x)
    fit = fit_bmm(torch.from_numpy(x))
    assert np.allclose(fit.alphas.numpy(), alphas, rtol=1e-9)
    assert np.allclose(fit.betas.numpy(), betas, rtol=1e-9)
    assert np.allclose(fit.weights.numpy(), weights, rtol=1e-9)
    assert np.abs(lookup_table(fit, 1).numpy() - official_table(alphas, betas, weights, 1)).max() < 1e-9


def test_a_component_collapsing_onto_one_value_stays_finite() -> None:
    """Two point masses: each component's variance is ~0 (the code divides by zero and gets NaN);
    the variance floor keeps alpha near 1e11, the fit finite and the table in [0, 1]."""
    x = torch.tensor([0.2] * 50 + [0.9] * 50, dtype=torch.float64)
    fit = fit_bmm(x)
    assert torch.isfinite(fit.alphas).all() and torch.isfinite(fit.betas).all()
    assert fit.means.tolist() == pytest.approx([0.2, 0.9]) and fit.weights.tolist() == pytest.approx([0.5, 0.5])
    table = lookup_table(fit, fit.clean_component())
    assert torch.isfinite(table).all() and bool(((table >= 0) & (table <= 1)).all())


# -- the loss ------------------------------------------------------------------------------------
Z1 = torch.tensor([[2.0, 0.0]])
Z2 = torch.tensor([[0.0, 0.0]])
Y = torch.tensor([0])


def test_the_swapped_loss_on_hand_values() -> None:
    # c_1 = 0.9 (net1's clean probability), c_2 = 0.2: CE1 = 0.126928 weighted by c_2, CE2 = ln 2 by
    # c_1, MSE = ((0.880797 - 0.5)^2 * 2) / 2 = 0.145006.
    loss = resup_loss(Z1, Z2, Y, torch.tensor([0.9]), torch.tensor([0.2]))
    assert loss.item() == pytest.approx(1.374250, abs=1e-6)
    swapped_back = resup_loss(Z1, Z2, Y, torch.tensor([0.2]), torch.tensor([0.9]))  # each net its own weight
    assert swapped_back.item() == pytest.approx(0.977897, abs=1e-6)
    without_mse = resup_loss(Z1, Z2, Y, torch.tensor([0.9]), torch.tensor([0.2]), mse_weight=0)
    assert without_mse.item() == pytest.approx(0.2 * 0.126928 + 0.9 * 0.693147, abs=1e-6)  # 0.649218
    assert warmup_loss(Z1, Z2, Y).item() == pytest.approx(0.820075, abs=1e-6)


def test_the_gradient_treats_the_weights_as_constants() -> None:
    z1, z2 = Z1.clone().requires_grad_(), Z2.clone().requires_grad_()
    c1, c2 = torch.tensor([0.9], requires_grad=True), torch.tensor([0.2], requires_grad=True)
    resup_loss(z1, z2, Y, c1, c2).backward()
    assert c1.grad is None and c2.grad is None  # no gradient reaches the decisions
    # By hand, a = 0.880797, d = a - 0.5: dL/dz1_0 = 0.2 (a - 1) + 10 d a (1 - a);
    # dL/dz2_0 = 0.9 (0.5 - 1) - 2.5 d.
    assert z1.grad[0].tolist() == pytest.approx([0.375972, -0.375972], abs=1e-6)
    assert z2.grad[0].tolist() == pytest.approx([-1.401993, 1.401993], abs=1e-6)


def test_weights_computed_from_the_logits_send_no_gradient_into_them() -> None:
    """The same gradient whether the weights are detached by the caller or depend on the logits."""
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    grads = []
    for detach in (False, True):
        z1, z2 = logits.clone().requires_grad_(), (0.5 * logits).clone().requires_grad_()
        c1, c2 = torch.sigmoid(z1[:, 0]), torch.sigmoid(z2[:, 1])
        if detach:
            c1, c2 = c1.detach(), c2.detach()
        resup_loss(z1, z2, y, c1, c2).backward()
        grads.append((z1.grad.clone(), z2.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-7) and torch.allclose(grads[0][1], grads[1][1], atol=1e-7)


def test_clean_weights_read_the_table_and_are_clamped() -> None:
    table = torch.linspace(0, 1, 100)
    s = torch.tensor([0.884652, 1.0, 0.0, 0.5])
    assert clean_weights(table, s).tolist() == pytest.approx([88 / 99, 1 - 1e-4, 1e-4, 50 / 99], abs=1e-6)


# -- the method on stub networks -----------------------------------------------------------------
PHASE = Phase("train", 10)


class FakeAugmenter:
    """Training "images" are N x 4 uint8 feature rows (the stub networks are Linear(4, K))."""

    def test(self, images):
        return images.float() / 100

    def train(self, images, gen):
        return images.float() / 100 + 0.05 * torch.randn(images.shape, generator=gen, device=images.device)


LABELS = (0, 1, 2, 0, 1, 2, 0, 1, 2, 1)


def built(labels=LABELS, epochs: int = 10, augmentation: str = "none", **hp):
    ctx = stub_context(num_classes=3, labels=np.array(labels), epochs=epochs, batch_size=4)
    ctx.images = torch.randint(0, 255, (len(labels), 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    ctx.augmenters = lambda name: FakeAugmenter()
    ctx.augmentation = augmentation
    method = ReSup(ReSup.HParams(**hp))
    method.build(ctx)
    ctx.modules_of = method.modules
    return method


def batch_of(method, index: list[int]) -> Batch:
    ctx = method.ctx
    index_t = torch.tensor(index)
    raw = ctx.fetch(index_t)
    return Batch(FakeAugmenter().train(raw, torch.Generator().manual_seed(1)), ctx.labels.current[index_t], index_t)


def started(method, epoch: int) -> None:
    with method.ctx.at("train", epoch):
        method.on_epoch_start(PHASE, epoch)


def test_warmup_steps_train_both_networks_on_the_sum_of_their_ces() -> None:
    method = built()
    started(method, 0)
    assert method.tables is None and method.ctx.scan_work == 0  # no scan in the warm-up
    batch = batch_of(method, [0, 1, 2])
    expected = F.cross_entropy(method.net1(batch.x), batch.y) + F.cross_entropy(method.net2(batch.x), batch.y)
    out = method.train_step(batch, PHASE, 0)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(out) == {"loss", "loss1", "loss2", "logits", "work"}
    assert out["work"].item() == 6  # two networks, three images, forward and backward
    assert method.on_epoch_end(PHASE, 0) == {}


def test_the_scan_equals_a_hand_loop_and_fits_each_networks_mixture() -> None:
    method = built()
    started(method, 1)
    ctx = method.ctx
    x = FakeAugmenter().test(ctx.images)  # the test transform
    y = ctx.labels.current
    with ctx.at("train", 1):
        scanned = method.scan_similarities()
    for k, net in enumerate((method.net1, method.net2)):
        p = F.softmax(net(x), dim=1)
        s = p[torch.arange(len(y)), y] / p.norm(dim=1)
        assert torch.allclose(scanned[f"s{k + 1}"], s, atol=1e-6)
        fit = fit_bmm(s.clamp(1e-3, 1 - 1e-3))
        assert torch.allclose(method.fits[k].alphas, fit.alphas, rtol=1e-5)
        expected = lookup_table(fit, fit.clean_component("mean")).float()
        assert torch.allclose(method.tables[k], expected, atol=1e-5)
    assert ctx.scan_work == pytest.approx(2 * 2 * len(y) / 3)  # two scans of both networks, 1/3 per image
    assert ctx.scan_correct is not None  # net1's logits: the memorisation record
    metrics = method.on_epoch_end(PHASE, 1)
    assert set(metrics) == {"bmm_mean_clean", "bmm_weight_clean", "bmm_mean_clean_net2", "bmm_weight_clean_net2"}
    clean = method.fits[1].clean_component()
    assert metrics["bmm_mean_clean_net2"] == pytest.approx(float(method.fits[1].means[clean]))


def test_a_weighted_step_swaps_the_decisions_and_steps_both_networks_with_one_optimiser() -> None:
    method = built()
    started(method, 1)
    # Hand-made tables: net1's mixture says 0.9 everywhere; net2's reads floor(100 s) / 100.
    method.tables = torch.stack([torch.full((100,), 0.9), torch.arange(100) / 100.0])
    batch = batch_of(method, [0, 1, 2, 3])
    with torch.no_grad():
        z1, z2 = method.net1(batch.x), method.net2(batch.x)
        s2 = label_similarity(z2, batch.y)
        c2 = (torch.floor(100 * s2) / 100).clamp(1e-4, 1 - 1e-4)
        expected = resup_loss(z1, z2, batch.y, torch.full((4,), 0.9), c2)
    before = [[p.detach().clone() for p in net.parameters()] for net in (method.net1, method.net2)]
    out = method.train_step(batch, PHASE, 1)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["weight2"].item() == pytest.approx(0.9)  # net2's CE weighted by net1's decision
    assert torch.allclose(out["sample_score"], c2) and out["weight1"].item() == pytest.approx(c2.mean().item())
    assert torch.equal(out["selected"], c2 > 0.5) and out["logits"].shape == (4, 3)
    assert {"loss1", "loss2", "loss_mse", "work"} <= set(out) and out["work"].item() == 8
    assert len(method.ctx.optimizers) == 1
    for net, saved in zip((method.net1, method.net2), before, strict=True):
        assert any(not torch.equal(a, b) for a, b in zip(saved, net.parameters(), strict=True))


def test_fidelity_code_scans_with_the_training_pipeline_and_takes_component_one() -> None:
    paper, code = built(augmentation="flip"), built(augmentation="flip", fidelity="code")
    assert (paper.scan_pipeline, paper.clean_rule) == ("none", "mean")
    assert (code.scan_pipeline, code.clean_rule) == ("flip", "index")
    started(code, 1)
    # Augmented views (a generator-drawn pipeline) differ from the test transform's similarities.
    x = FakeAugmenter().test(code.ctx.images)
    p = F.softmax(code.net1(x), dim=1)
    s = p[torch.arange(len(LABELS)), code.ctx.labels.current] / p.norm(dim=1)
    assert not torch.allclose(code.fits[0].alphas, fit_bmm(s.clamp(1e-3, 1 - 1e-3)).alphas)
    with code.ctx.at("train", 1):
        again = code.scan_similarities()  # the same seeded draws: a resumed run refits the same mixtures
    assert torch.allclose(code.fits[0].alphas, fit_bmm(code_fit_input(again["s1"])).alphas)


def test_equal_similarities_make_every_sample_clean_without_a_fit() -> None:
    method = built()
    method.refit(torch.full((10,), 0.5), torch.linspace(0.1, 0.95, 10))
    assert method.fits[0] is None and torch.equal(method.tables[0], torch.ones(100))
    assert set(method.on_epoch_end(PHASE, 1)) == {"bmm_mean_clean_net2", "bmm_weight_clean_net2"}


def test_validate_refuses_a_warmup_that_leaves_no_resup_epoch() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_hparams(ReSup, {"warmup_epochs": 3}, epochs=3, noise_rate=0.2, batch_size=64)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_hparams(ReSup, {}, epochs=1, noise_rate=0.2, batch_size=64)
    assert build_hparams(ReSup, {}, epochs=2, noise_rate=0.2, batch_size=64).warmup_epochs == 1


def test_prediction_is_net1_with_net2_and_the_ensemble_as_members() -> None:
    method = built()
    x = torch.randn(3, 4)
    members = method.predict_members(x, PHASE)
    assert set(members) == {"model", "net1", "net2", "ensemble"}
    assert torch.equal(members["model"], method.net1(x)) and torch.equal(method.predict(x), method.net1(x))
    assert method.deployment()["single"] == "train/net1"


# -- through the engine --------------------------------------------------------------------------
def test_conformance_with_one_warmup_and_one_weighted_epoch(tmp_path) -> None:
    from nlbench.testing import check_method

    report = check_method(ReSup, tmp_path=tmp_path, epochs=2)
    warm, weighted = (r["train"] for r in report.history)
    assert "loss1" in warm and "loss_mse" not in warm and "scan_work" not in warm
    assert {"loss_mse", "weight1", "weight2", "bmm_mean_clean", "bmm_weight_clean", "bmm_mean_clean_net2",
            "scan_acc_clean"} <= set(weighted)
    assert weighted["label_precision"] is not None and weighted["score_clean"] is not None
    assert 0 < weighted["bmm_mean_clean"] < 1 and 0 < weighted["bmm_weight_clean"] < 1
    n = 140 - report.result["validation"]["size"]
    assert weighted["scan_work"] == pytest.approx(2 * n / 3)
    assert report.result["cost"]["work_epochs"] == pytest.approx(
        (warm["work"] + weighted["work"] + weighted["scan_work"]) / n)


def test_the_cli_lists_resup_with_its_options_and_search_space(cli) -> None:
    listed = cli("methods", "resup")
    assert listed.code == 0, listed.err
    assert all(word in listed.out for word in ("warmup_epochs", "mse_weight", "fidelity", "[1, 20]"))


@pytest.mark.slow
def test_a_resumed_run_equals_a_whole_one(cli, tmp_path) -> None:
    """The mixtures are refitted by the scan at each epoch's start from the checkpointed networks:
    a run stopped after its first weighted epoch resumes exactly."""
    args = ["run", "--method", "resup", "--epochs", "3", "--noise", "0.3", *TINY]
    a, b = whole_and_resumed(cli, tmp_path, args, stop_after=2)
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]
    assert "bmm_mean_clean" in a["diagnostics"]


def test_build_hparams_accepts_the_code_form() -> None:
    hp = build_hparams(ReSup, {"fidelity": "code"}, epochs=30, noise_rate=0.3, batch_size=96)
    assert dataclasses.asdict(hp) == {"warmup_epochs": 1, "mse_weight": 5.0, "fidelity": "code"}
