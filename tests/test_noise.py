"""Label-noise injection: modes, exact counts, reproducibility and independence from the method."""

from __future__ import annotations

import numpy as np
import pytest

from nlbench.data.noise import inject_noise, noise_seed
from nlbench.errors import UsageError

CLEAN = np.repeat(np.arange(7), [300, 500, 120, 200, 90, 40, 50])


def test_flip_never_keeps_the_true_class_and_hits_the_rate():
    result = inject_noise(CLEAN, 7, 0.4, "flip", dataset="d", seed=1)
    changed = result.labels != CLEAN
    # Every drawn sample changed class: the realised rate is the share of changed labels.
    assert result.realised_rate == pytest.approx(changed.mean())
    assert abs(result.realised_rate - 0.4) < 0.04
    transitions = result.transitions(CLEAN, 7)
    assert transitions.sum() == len(CLEAN)
    # Off-diagonal targets are spread over all other classes.
    assert (transitions[1][np.arange(7) != 1] > 0).all()


def test_flip_changes_every_selected_label():
    # With rate close to 1 nearly all labels are drawn; none of them may keep its class.
    result = inject_noise(CLEAN, 7, 0.999, "flip", dataset="d", seed=3)
    assert (result.labels != CLEAN).mean() > 0.99


def test_exact_flips_exactly_round_r_nc_per_class():
    rate = 0.3
    result = inject_noise(CLEAN, 7, rate, "exact", dataset="d", seed=2)
    for c in range(7):
        members = CLEAN == c
        assert int((result.labels[members] != c).sum()) == round(rate * members.sum())


def test_uniform_may_keep_the_true_class():
    result = inject_noise(CLEAN, 7, 0.5, "uniform", dataset="d", seed=0)
    # about rate * (K-1)/K change class
    assert abs(result.realised_rate - 0.5 * 6 / 7) < 0.05


def test_pair_moves_to_the_next_class_of_the_reference_order():
    order = (0, 1, 3, 2, 6, 5, 4)  # positions of a custom order
    result = inject_noise(CLEAN, 7, 0.4, "pair", dataset="d", seed=0, pair_order=order)
    changed = result.labels != CLEAN
    following = {order[i]: order[(i + 1) % 7] for i in range(7)}
    assert all(result.labels[i] == following[CLEAN[i]] for i in np.flatnonzero(changed))


def test_same_key_same_labels_and_different_seeds_differ():
    a = inject_noise(CLEAN, 7, 0.2, "flip", dataset="synthfer", seed=1)
    b = inject_noise(CLEAN, 7, 0.2, "flip", dataset="synthfer", seed=1)
    c = inject_noise(CLEAN, 7, 0.2, "flip", dataset="synthfer", seed=2)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert noise_seed("synthfer", 0.2, "flip", 1) != noise_seed("rafdb", 0.2, "flip", 1)


def test_zero_rate_is_clean():
    result = inject_noise(CLEAN, 7, 0.0, "flip", dataset="d", seed=1)
    assert np.array_equal(result.labels, CLEAN) and result.realised_rate == 0.0


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_rates_outside_unit_interval_are_refused(rate):
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        inject_noise(CLEAN, 7, rate, "flip", dataset="d", seed=1)
