"""DivideMix: the loss mixture, the MixMatch pieces, the epoch plan, a step, resume (hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, whole_and_resumed
from nlbench import Batch, Phase
from nlbench.errors import ConfigError
from nlbench.lib.gmm import clean_probability, fit_gmm, initial_responsibilities, two_means_split
from nlbench.lib.mixmatch import (
    co_guess,
    co_refine,
    iterations,
    labeled_loss,
    lambda_u,
    mix,
    mix_weight,
    prior_penalty,
    sharpen,
    unlabeled_loss,
    warmup_epochs,
)
from nlbench.plugins import get_registry
from nlbench.seeding import derive_seed
from nlbench.spec import build_hparams
from nlbench.testing import stub_context
from nlbench.train.epoch import planned_steps

EIGHT = torch.tensor([0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.9, 1.0], dtype=torch.float64)


# -- the mixture ---------------------------------------------------------------------------------
def test_gmm_on_eight_normalised_losses() -> None:
    assert two_means_split(EIGHT) == 5  # the split after 0.4
    fit = fit_gmm(EIGHT)
    # Initial pi = (0.625, 0.375), mu = (0.15, 0.833333), v = (0.0205, 0.029389); two iterations.
    assert fit.log_likelihoods == pytest.approx([-0.177782, -0.174462], abs=1e-6)
    assert fit.converged
    assert fit.weights.tolist() == pytest.approx([0.612494, 0.387506], abs=1e-6)
    assert fit.means.tolist() == pytest.approx([0.146332, 0.817076], abs=1e-6)
    assert fit.variances.tolist() == pytest.approx([0.020588, 0.035826], abs=1e-6)
    expected = [0.999928, 0.999837, 0.999614, 0.997476, 0.831989, 0.026440, 2e-6, 0]
    assert fit.clean_probability.tolist() == pytest.approx(expected, abs=1e-6)
    # The returned posterior is one M-step past the last likelihood: iteration 2 gave 0.868774 to 0.4.
    two = fit_gmm(EIGHT, max_iter=1)
    assert two.clean_probability[4].item() != pytest.approx(0.831989, abs=1e-3)


def test_gmm_initial_parameters_follow_the_split() -> None:
    from nlbench.lib.gmm import estimate_parameters

    nk, means, variances = estimate_parameters(EIGHT, initial_responsibilities(EIGHT))
    assert (nk / 8).tolist() == pytest.approx([0.625, 0.375])
    assert means.tolist() == pytest.approx([0.15, 0.833333], abs=1e-6)
    assert variances.tolist() == pytest.approx([0.0205, 0.029389], abs=1e-6)


def test_the_optimal_split_pins_an_input_with_two_local_optima() -> None:
    x = torch.tensor([0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    assert two_means_split(x) == 5  # {0..0.5} | {0.8, 1}: SSE 0.168 against 0.177
    assert clean_probability(x)[4].item() == pytest.approx(0.998751, abs=1e-6)


def test_equal_losses_are_all_clean_and_the_order_of_the_input_does_not_matter() -> None:
    assert clean_probability(torch.full((5,), 0.7)).tolist() == [1.0] * 5
    assert clean_probability(torch.tensor([3.0])).tolist() == [1.0]
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    shuffled = clean_probability(EIGHT[perm] * 3 + 1)  # min-max normalisation undoes the scale
    assert torch.allclose(shuffled, clean_probability(EIGHT)[perm], atol=1e-12)


def sklearn_em(x: np.ndarray, resp: np.ndarray, max_iter: int = 10, tol: float = 1e-2,
               reg: float = 5e-4) -> np.ndarray:
    """scikit-learn's GaussianMixture EM (full covariances, 1 feature) re-written in numpy float64:
    _estimate_gaussian_parameters, Cholesky precisions, _estimate_log_prob_resp, fit's loop, predict_proba."""
    X = x.reshape(-1, 1)

    def params(resp):
        nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
        means = resp.T @ X / nk[:, None]
        covs = np.empty((2, 1, 1))
        for k in range(2):
            diff = X - means[k]
            covs[k] = (resp[:, k] * diff.T) @ diff / nk[k]
            covs[k].flat[::2] += reg
        return nk, means, covs

    def chol(covs):
        out = np.empty_like(covs)
        for k, cov in enumerate(covs):
            c = np.linalg.cholesky(cov)
            out[k] = np.linalg.solve(c, np.eye(1)).T
        return out

    def estep(weights, means, prec):
        log_det = np.array([np.sum(np.log(np.diag(p))) for p in prec])
        log_prob = np.empty((X.shape[0], 2))
        for k in range(2):
            y = X @ prec[k] - means[k] @ prec[k]
            log_prob[:, k] = np.sum(np.square(y), axis=1)
        weighted = -0.5 * (np.log(2 * np.pi) + log_prob) + log_det + np.log(weights)
        norm = np.logaddexp(weighted[:, 0], weighted[:, 1])
        return norm.mean(), weighted - norm[:, None]

    nk, means, covs = params(resp)
    weights, prec = nk / X.shape[0], chol(covs)
    lower = -np.inf
    for _ in range(max_iter):
        prev = lower
        lower, log_resp = estep(weights, means, prec)
        nk, means, covs = params(np.exp(log_resp))
        weights, prec = nk / nk.sum(), chol(covs)
        if abs(lower - prev) < tol:
            break
    return np.exp(estep(weights, means, prec)[1])


def bimodal_losses(seed: int, n: int = 2000, noisy: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = int(noisy * n)
    values = np.concatenate([rng.gamma(2.0, 0.15, n - k), rng.normal(2.5, 0.6, k).clip(0.05)])
    rng.shuffle(values)
    return (values - values.min()) / (values.max() - values.min())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_the_same_partition_the_em_equals_sklearns(seed: int) -> None:
    x = bimodal_losses(seed)
    rng = np.random.default_rng(100 + seed)
    labels = (x > rng.uniform(0.2, 0.6)).astype(int)  # any partition, not only the optimal one
    resp = np.eye(2)[labels]
    ours = fit_gmm(torch.from_numpy(x), torch.from_numpy(resp)).posteriors.numpy()
    assert np.abs(ours - sklearn_em(x, resp)).max() < 1e-12


def test_close_to_sklearns_gaussian_mixture_on_bimodal_losses() -> None:
    mixture = pytest.importorskip("sklearn.mixture")
    for seed in range(5):
        x = bimodal_losses(seed)
        gmm = mixture.GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed)
        gmm.fit(x.reshape(-1, 1))
        theirs = gmm.predict_proba(x.reshape(-1, 1))[:, gmm.means_.argmin()]
        ours = clean_probability(torch.from_numpy(x)).numpy()
        assert np.abs(ours - theirs).max() < 5e-3
        # Started from our partition, sklearn's EM is ours (and the numpy re-implementation above).
        resp = initial_responsibilities(torch.from_numpy(x)).numpy()
        same = mixture.GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)
        same._initialize_parameters = lambda X, random_state, m=same, r=resp, **kw: m._initialize(X, r, **kw)
        same.fit(x.reshape(-1, 1))
        theirs = same.predict_proba(x.reshape(-1, 1))[:, same.means_.argmin()]
        assert np.abs(ours - theirs).max() < 1e-12
        assert np.abs(sklearn_em(x, resp)[:, 0] - theirs).max() < 1e-12


# -- MixMatch pieces -----------------------------------------------------------------------------
def test_co_refinement_and_sharpening() -> None:
    refined = co_refine(torch.tensor([[1.0, 0.0]]), torch.tensor([0.8]), torch.tensor([[0.3, 0.7]]), 0.5)
    # 0.8 (1, 0) + 0.2 (0.3, 0.7) = (0.86, 0.14) -> squares (0.7396, 0.0196) / 0.7592.
    assert refined[0].tolist() == pytest.approx([0.974183, 0.025817], abs=1e-6)
    assert sharpen(torch.tensor([[0.86, 0.14]]), 0.5)[0].tolist() == pytest.approx([0.974183, 0.025817], abs=1e-6)


def test_co_guessing_averages_four_predictions_then_sharpens() -> None:
    predictions = [torch.tensor([[0.6, 0.4]]), torch.tensor([[0.5, 0.5]]), torch.tensor([[0.7, 0.3]]),
                   torch.tensor([[0.6, 0.4]])]
    assert co_guess(predictions, 0.5)[0].tolist() == pytest.approx([0.692308, 0.307692], abs=1e-6)


def test_lambda_u_ramp() -> None:
    # W = 10, I = 100 iterations per epoch, ramp over 16 epochs to 25.
    assert lambda_u(25, 10, 0, 100, 10, 16) == 0
    assert lambda_u(25, 18, 0, 100, 10, 16) == pytest.approx(12.5)
    assert lambda_u(25, 18, 50, 100, 10, 16) == pytest.approx(13.28125)
    assert lambda_u(25, 26, 0, 100, 10, 16) == pytest.approx(25)
    assert lambda_u(25, 40, 0, 100, 10, 16) == pytest.approx(25)
    assert iterations(199, 64) == 4  # the code's len(labeled) // B + 1


def test_unlabeled_loss_averages_over_rows_and_classes() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    assert unlabeled_loss(logits, torch.tensor([[0.5, 0.3, 0.2]])).item() == pytest.approx(0.02, abs=1e-7)
    assert unlabeled_loss(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0


def test_prior_penalty_is_kl_of_uniform_from_the_mean_prediction() -> None:
    # Two rows whose softmax average is (0.5, 0.3, 0.2): (1/3) ln((1/3)^3 / 0.03) = 0.070240.
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.3, 0.3]]))
    assert prior_penalty(logits).item() == pytest.approx(0.070240, abs=1e-6)
    assert prior_penalty(torch.zeros(4, 7)).item() == pytest.approx(0.0, abs=1e-7)


def test_labeled_loss_is_soft_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert labeled_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_mixing_keeps_each_row_closest_to_itself() -> None:
    assert mix_weight(0.3) == pytest.approx(0.7) and mix_weight(0.8) == pytest.approx(0.8)
    inputs = torch.eye(3)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    perm = torch.tensor([2, 0, 1])
    mixed_in, mixed_t = mix(inputs, targets, 0.7, perm)
    assert torch.allclose(mixed_in, 0.7 * inputs + 0.3 * inputs[perm])
    assert torch.allclose(mixed_t, 0.7 * targets + 0.3 * targets[perm])
    assert mixed_in[0].tolist() == pytest.approx([0.7, 0.0, 0.3])


def test_warmup_defaults_to_a_tenth_of_the_epochs() -> None:
    assert [warmup_epochs(0, e) for e in (2, 15, 25, 40, 100)] == [1, 2, 3, 4, 10]
    assert warmup_epochs(3, 40) == 3


def test_softmax_helpers_agree_with_torch() -> None:
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sharpen(F.softmax(z, 1), 1.0), F.softmax(z, 1), atol=1e-6)


# -- the method ----------------------------------------------------------------------------------
DivideMix = get_registry().method("dividemix")
PHASE = Phase("train", 10)


class FakeAugmenter:
    """Training "images" are N x 4 uint8 feature rows (the stub networks are Linear(4, K))."""

    def test(self, images):
        return images.float() / 100

    def train(self, images, gen):
        return images.float() / 100 + 0.05 * torch.randn(images.shape, generator=gen, device=images.device)


def built(labels=(0, 1, 2, 0, 1), batch_size: int = 2, epochs: int = 10, **hp):
    import dataclasses

    ctx = stub_context(num_classes=3, labels=np.array(labels), epochs=epochs, batch_size=batch_size)
    ctx.settings = dataclasses.replace(ctx.settings, drop_last=False)
    ctx.images = torch.randint(0, 255, (len(labels), 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    ctx.augmenters = lambda name: FakeAugmenter()
    method = DivideMix(DivideMix.HParams(**hp))
    method.build(ctx)
    ctx.modules_of = method.modules
    return method


def batch_of(method, index: list[int], segment: str | None) -> Batch:
    ctx = method.ctx
    index_t = torch.tensor(index)
    raw = ctx.fetch(index_t)
    return Batch(FakeAugmenter().train(raw, torch.Generator().manual_seed(1)), ctx.labels.current[index_t], index_t,
                 raw, segment)


W1 = torch.tensor([0.9, 0.9, 0.9, 0.1, 0.1])  # net1's division: L1 = {0, 1, 2}
W2 = torch.tensor([0.1, 0.9, 0.9, 0.9, 0.1])  # net2's division: L2 = {1, 2, 3}


def divided(**hp):
    method = built(warmup_epochs=1, **hp)
    with method.ctx.at("train", 1):
        method.on_epoch_start(PHASE, 1)  # scans and divides; replaced by the hand-made division
    method.set_division(W1, W2)
    return method


def test_co_divide_each_network_trains_on_its_peers_labeled_set() -> None:
    import dataclasses

    method = divided()
    plan = method.epoch_plan(PHASE, 1)
    assert [s.name for s in plan] == ["net1", "net2"]
    assert sorted(plan[0].indices.tolist()) == [1, 2, 3]  # net1 trains on L2
    assert sorted(plan[1].indices.tolist()) == [0, 1, 2]  # net2 trains on L1
    settings = method.ctx.settings
    steps = planned_steps(plan, settings, 0, "train", 1)
    assert [s.segment for s in steps] == ["net1", "net1", "net2", "net2"]
    dropped = planned_steps(plan, dataclasses.replace(settings, drop_last=True), 0, "train", 1)
    assert [s.segment for s in dropped] == ["net1", "net2"]
    assert method.epoch_plan(PHASE, 0) is None  # warm-up: the engine's epoch


def test_an_empty_labeled_set_is_skipped() -> None:
    method = divided()
    method.set_division(W1, torch.zeros(5))  # net2 labels nothing: net1 has no segment
    plan = method.epoch_plan(PHASE, 1)
    steps = planned_steps(plan, method.ctx.settings, 0, "train", 1)
    assert [s.segment for s in steps] == ["net2", "net2"]
    assert method.on_epoch_end(PHASE, 1)["labeled_share"] == 0


def test_unlabeled_batches_come_from_the_peers_unlabeled_set_cycled() -> None:
    method = divided()
    draws = [method.next_unlabeled("net1", 2).tolist() for _ in range(3)]
    assert all(sorted(d) == [0, 4] for d in draws)  # U2 = {0, 4}
    assert sorted(method.next_unlabeled("net1", 3).tolist()) in ([0, 0, 4], [0, 4, 4])
    assert sorted(method.next_unlabeled("net2", 2).tolist()) == [3, 4]  # U1 = {3, 4}


def test_a_segment_step_trains_only_its_network_with_the_peers_weights() -> None:
    method = divided()
    before1 = [p.detach().clone() for p in method.net1.parameters()]
    before2 = [p.detach().clone() for p in method.net2.parameters()]
    out = method.train_step(batch_of(method, [1, 3], "net1"), PHASE, 1)
    assert all(torch.equal(a, b) for a, b in zip(before2, method.net2.parameters()))  # the peer is fixed
    assert any(not torch.equal(a, b) for a, b in zip(before1, method.net1.parameters()))
    assert out["sample_score"].tolist() == pytest.approx([0.9, 0.9])  # w2 of samples 1 and 3
    assert out["selected"].tolist() == [True, True] and out["logits"].shape == (2, 3)
    # Epoch 1 = W, step 0: the ramp starts at 0, so L = L_x + penalty.
    assert out["lambda_u"].item() == 0
    assert out["loss"].item() == pytest.approx(out["loss_x"].item() + out["penalty"].item(), rel=1e-6)
    assert not method.net2.training and method.net1.training
    out2 = method.train_step(batch_of(method, [0, 2], "net2"), PHASE, 1)
    assert set(out2) == {"loss", "loss_x", "loss_u", "lambda_u", "penalty", "work"}  # diagnostics: net1's segment
    # Work: no-grad forwards at 1/3 each of x, x' by net1 (2 x 2 images) and of u, u' by both networks
    # (4 x 2), then the forward-backward of the 8 mixed rows.
    assert out["work"].item() == pytest.approx((2 * 2 + 4 * 2) / 3 + 8)


def test_the_step_loss_is_mixmatch_on_hand_wired_pieces() -> None:
    """Recompute a step from the pieces: same draws, same mixed rows, same loss."""
    method = divided(lambda_u=25.0, rampup_epochs=1)
    index = [1, 2]
    batch = batch_of(method, index, "net1")
    net1 = torch.nn.Linear(4, 3)
    net1.load_state_dict(method.net1.state_dict())
    net2 = method.net2
    ctx = method.ctx
    # Replay the generators the step draws from.
    with ctx.at("train", 2):
        method.on_epoch_start(PHASE, 2)
    method.set_division(W1, W2)
    with ctx.at("train", 2):
        view_gen = ctx.generator("dividemix-views")
        mix_gen = ctx.generator("dividemix-mix")
        unlabeled_gen = ctx.generator("dividemix-unlabeled")
    beta = np.random.default_rng(derive_seed(ctx.seed, "train", 2, "dividemix-beta"))
    out = method.train_step(batch, PHASE, 2)

    x2 = FakeAugmenter().train(batch.raw, view_gen)
    pool = torch.tensor([0, 4])
    u_index = pool[torch.randperm(2, generator=unlabeled_gen)]
    raw_u = ctx.fetch(u_index)
    u, u2 = FakeAugmenter().train(raw_u, view_gen), FakeAugmenter().train(raw_u, view_gen)
    with torch.no_grad():
        q_u = co_guess([F.softmax(m(v), 1) for m in (net1, net2) for v in (u, u2)], 0.5)
        mean_x = (F.softmax(net1(batch.x), 1) + F.softmax(net1(x2), 1)) / 2
        q_x = co_refine(F.one_hot(batch.y, 3).float(), W2[index], mean_x, 0.5)
    lam = mix_weight(float(beta.beta(4.0, 4.0)))
    perm = torch.randperm(8, generator=mix_gen)
    mixed_in, mixed_t = mix(torch.cat([batch.x, x2, u, u2]), torch.cat([q_x, q_x, q_u, q_u]), lam, perm)
    logits = net1(mixed_in)
    weight = lambda_u(25.0, 2, 0, iterations(3, 2), 1, 1)
    assert weight == 25.0
    expected = labeled_loss(logits[:4], mixed_t[:4]) + weight * unlabeled_loss(logits[4:], mixed_t[4:]) + \
        prior_penalty(logits)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["lambda_u"].item() == 25.0


def test_warmup_steps_train_both_networks_on_ce() -> None:
    method = built(warmup_epochs=2)
    with method.ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    batch = batch_of(method, [0, 1, 2], None)
    z1, z2 = method.net1(batch.x), method.net2(batch.x)
    expected = F.cross_entropy(z1, batch.y) + F.cross_entropy(z2, batch.y)
    out = method.train_step(batch, PHASE, 0)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["work"].item() == 6  # two networks, three images, forward and backward
    assert method.probability == [None, None]  # no division in the warm-up


def test_division_from_a_scan_of_both_networks() -> None:
    method = built(labels=(0, 1, 2, 0, 1, 2, 0, 1), warmup_epochs=1)
    with method.ctx.at("train", 1):
        method.on_epoch_start(PHASE, 1)
    x = FakeAugmenter().test(method.ctx.images)
    y = method.ctx.labels.current
    for k, net in enumerate((method.net1, method.net2)):
        losses = F.cross_entropy(net(x), y, reduction="none")
        assert torch.allclose(method.probability[k], clean_probability(losses).float(), atol=1e-6)
    assert method.ctx.scan_correct is not None  # net1's logits: the memorisation record


def test_prediction_is_the_sum_of_both_networks_logits() -> None:
    method = built()
    x = torch.randn(3, 4)
    members = method.predict_members(x, PHASE)
    assert set(members) == {"model", "net1", "net2", "ensemble"}
    assert torch.allclose(members["model"], method.net1(x) + method.net2(x))
    assert torch.allclose(method.predict(x), members["model"])
    assert method.deployment()["single"] == "train/net1"


def test_validate_refuses_a_warmup_that_leaves_no_dividemix_epoch() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_hparams(DivideMix, {"warmup_epochs": 5}, epochs=5, noise_rate=0.2, batch_size=64)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_hparams(DivideMix, {}, epochs=1, noise_rate=0.2, batch_size=64)  # W = 1
    assert build_hparams(DivideMix, {"warmup_epochs": 1}, epochs=2, noise_rate=0.2, batch_size=64).warmup_epochs == 1
    # Without an unlabeled loss the ramp has no effect: equivalent runs share one id.
    assert DivideMix.canonical(DivideMix.HParams(lambda_u=0, rampup_epochs=3)) == DivideMix.HParams(lambda_u=0)


def test_loss_history_averages_the_last_normalised_losses_and_survives_a_checkpoint() -> None:
    method = built(loss_history=2)
    first, second = torch.tensor([0.0, 1, 2, 3, 4]), torch.tensor([8.0, 6, 4, 2, 0])
    method.division_probability(0, first)
    averaged = method.division_probability(0, second)
    assert torch.allclose(averaged, torch.ones(5))  # (l1' + l2') / 2 is constant here
    state = method.extra_state()
    fresh = built(loss_history=2)
    fresh.load_extra_state(state)
    assert len(fresh.history[0]) == 2 and torch.equal(fresh.history[0][1], method.history[0][1])


def test_conformance_with_one_warmup_and_one_divided_epoch(tmp_path) -> None:
    from nlbench.testing import check_method

    report = check_method(DivideMix, {"warmup_epochs": 1}, tmp_path=tmp_path, epochs=2)
    warm, divided_epoch = (r["train"] for r in report.history)
    assert "loss1" in warm and "loss_x" not in warm
    assert {"loss_x", "loss_u", "lambda_u", "penalty", "labeled_share", "scan_acc_clean"} <= set(divided_epoch)
    assert divided_epoch["label_precision"] is not None
    # Measured work: warm-up 2 per image; the divided epoch's scan 2/3 per image plus its steps.
    n = 140 - report.result["validation"]["size"]
    assert warm["work"] == pytest.approx(2 * 32 * (n // 32)) and "scan_work" not in warm  # drop_last
    assert divided_epoch["scan_work"] == pytest.approx(2 * n / 3)
    assert report.result["cost"]["work_epochs"] == pytest.approx(
        (warm["work"] + divided_epoch["work"] + divided_epoch["scan_work"]) / n)


def test_the_cli_trains_dividemix(cli, tmp_path) -> None:
    result = cli("run", "--method", "dividemix", "--epochs", "2", "--set", "methods.dividemix.warmup_epochs=1", *TINY,
                 "--runs-dir", str(tmp_path))
    assert result.code == 0, result.err
    listed = cli("methods")
    assert "dividemix" in listed.out


@pytest.mark.slow
def test_a_resumed_run_equals_a_whole_one(cli, tmp_path) -> None:
    """Divisions are recomputed by the scan at each epoch's start, the loss history is checkpointed,
    every draw comes from per-epoch generators: a run stopped after its first divided epoch resumes exactly."""
    args = ["run", "--method", "dividemix", "--epochs", "3", "--noise", "0.3", *TINY,
            "--set", "methods.dividemix.warmup_epochs=1", "--set", "methods.dividemix.loss_history=2"]
    a, b = whole_and_resumed(cli, tmp_path, args, stop_after=2)
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]
