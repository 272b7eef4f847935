"""DivideMix: the loss mixture and the MixMatch pieces (hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
