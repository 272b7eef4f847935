"""FER noise models: fer-confusion, instance-dependent, votes (vote/worst), real FERPlus noise, stored transitions."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, read_result, run_dirs
from nlbench.data.fer_confusion import CLASSES, VOTE_COUNTS, flip_targets, vote_counts
from nlbench.data.noise import draw_from_votes, inject_noise, instance_noise
from nlbench.errors import UsageError

REAL = Path(os.environ.get("NLBENCH_FERPLUS") or Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus")
SEVEN = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
CLEAN = np.repeat(np.arange(7), 2000)


def needs_ferplus():
    if not (REAL / "fer2013new.csv").is_file():
        pytest.skip(f"real FERPlus data not found at {REAL} (set NLBENCH_FERPLUS to its folder)")


# ------------------------------------------------------------------------------------ fer-confusion
def test_flip_targets_are_the_off_diagonal_vote_shares_by_class_name():
    targets = flip_targets(("fear", "surprise", "anger", "disgust"))  # another order, another subset
    np.testing.assert_allclose(targets.sum(axis=1), 1.0)
    assert np.all(np.diag(targets) == 0)
    fear, surprise = CLASSES.index("fear"), CLASSES.index("surprise")
    anger, disgust = CLASSES.index("anger"), CLASSES.index("disgust")
    # Hand-computed from VOTE_COUNTS: the fear row's votes for surprise / (votes for surprise, anger, disgust).
    row = VOTE_COUNTS[fear]
    assert targets[0, 1] == pytest.approx(row[surprise] / (row[surprise] + row[anger] + row[disgust]))
    assert targets[3, 2] == pytest.approx(VOTE_COUNTS[disgust, anger] / (VOTE_COUNTS[disgust, fear]
                                          + VOTE_COUNTS[disgust, surprise] + VOTE_COUNTS[disgust, anger]))


def test_fer_confusion_hits_the_rate_and_follows_human_confusions():
    result = inject_noise(CLEAN, 7, 0.4, "fer-confusion", dataset="d", seed=1, class_names=SEVEN)
    assert abs(result.realised_rate - 0.4) < 0.02
    counts = result.transitions(CLEAN, 7)
    # The flips of each class follow its row of the vote matrix (within sampling error).
    flips = counts.astype(float)
    np.fill_diagonal(flips, 0)
    np.testing.assert_allclose(flips / flips.sum(axis=1, keepdims=True), flip_targets(SEVEN), atol=0.04)
    names = list(SEVEN)
    assert counts[names.index("fear")].argsort()[-2] == names.index("surprise")  # after fear itself
    assert counts[names.index("sadness")].argsort()[-2] == names.index("neutral")
    assert counts[names.index("disgust")].argsort()[-2] == names.index("anger")


def test_fer_confusion_is_reproducible_and_refuses_unknown_classes():
    a = inject_noise(CLEAN, 7, 0.3, "fer-confusion", dataset="d", seed=2, class_names=SEVEN)
    b = inject_noise(CLEAN, 7, 0.3, "fer-confusion", dataset="d", seed=2, class_names=SEVEN)
    assert np.array_equal(a.labels, b.labels)
    with pytest.raises(UsageError, match="fer-confusion knows the eight FERPlus emotions"):
        inject_noise(CLEAN % 2, 2, 0.3, "fer-confusion", dataset="d", seed=2, class_names=("cat", "dog"))


def test_shipped_vote_counts_are_recomputed_from_the_ferplus_votes():
    needs_ferplus()
    import sys

    import pandas as pd

    from nlbench.plugins import get_registry

    ferplus = sys.modules[get_registry().dataset("ferplus").__module__]
    votes = pd.read_csv(REAL / "fer2013new.csv", keep_default_na=False)
    raw = votes[list(ferplus.VOTE_COLUMNS)].to_numpy(dtype=np.int64)
    majority = ferplus.majority_labels(raw)
    majority[votes["Usage"].str.strip().isin(["Training", "PublicTest", "PrivateTest"]).to_numpy() == 0] = -1
    assert np.array_equal(vote_counts(raw[:, :8], majority), VOTE_COUNTS)


# ------------------------------------------------------------------------------------------ instance
def test_instance_noise_hits_the_rate_and_depends_on_the_image():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((len(CLEAN), 48)).astype(np.float32)
    labels = instance_noise(np.random.default_rng(5), CLEAN, 7, 0.3, features)
    assert abs(np.mean(labels != CLEAN) - 0.3) < 0.02
    # Where a sample flips to is the argmax of x W_y over the other classes: x and -x (same class)
    # go to different classes far more often than two unrelated samples would agree by chance.
    pairs = np.concatenate([features[:500], -features[:500]])
    same_class = np.zeros(1000, dtype=np.int64)
    flipped = instance_noise(np.random.default_rng(1), same_class, 7, 0.999, pairs)
    assert np.mean(flipped[:500] == flipped[500:]) < 0.05
    # Identical images of one class flip to the same class.
    copies = np.repeat(features[:1], 200, axis=0)
    flipped = instance_noise(np.random.default_rng(2), np.zeros(200, dtype=np.int64), 7, 0.999, copies)
    assert len(set(flipped[flipped != 0].tolist())) == 1


def test_instance_noise_through_the_cli_is_seeded(cli, tmp_path):
    first = cli("noise", "preview", "--dataset", "synthfer", "--noise", "0.4", "--noise-mode", "instance", *TINY)
    again = cli("noise", "preview", "--dataset", "synthfer", "--noise", "0.4", "--noise-mode", "instance", *TINY)
    other = cli("noise", "preview", "--dataset", "synthfer", "--noise", "0.4", "--noise-mode", "instance",
                "--seed", "2", *TINY)
    assert first.code == 0, first.err
    assert "instance noise at rate 0.40" in first.out and first.out == again.out and first.out != other.out


# ----------------------------------------------------------------------------------------------- votes
def test_vote_draws_follow_the_votes_and_worst_is_wrong_whenever_it_can_be():
    clean = np.zeros(30000, dtype=np.int64)
    votes = np.tile([6, 3, 1, 0], (30000, 1))
    votes[-1000:] = [10, 0, 0, 0]  # unanimous faces: no wrong vote to draw
    drawn = draw_from_votes(clean, votes, "vote", dataset="d", seed=1).labels
    shares = np.bincount(drawn[:-1000], minlength=4) / 29000
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1, 0.0], atol=0.01)
    worst = draw_from_votes(clean, votes, "worst", dataset="d", seed=1)
    assert np.all(worst.labels[:-1000] != 0) and np.all(worst.labels[-1000:] == 0)
    np.testing.assert_allclose(np.bincount(worst.labels[:-1000], minlength=4)[1:] / 29000, [0.75, 0.25, 0], atol=0.01)
    assert worst.realised_rate == pytest.approx(29000 / 30000)
    again = draw_from_votes(clean, votes, "vote", dataset="d", seed=1).labels
    other = draw_from_votes(clean, votes, "vote", dataset="d", seed=2).labels
    assert np.array_equal(drawn, again) and not np.array_equal(drawn, other)


def test_a_face_without_votes_keeps_its_label():
    result = draw_from_votes(np.array([2, 1]), np.array([[0, 0, 0], [3, 0, 0]]), "vote", dataset="d", seed=1)
    assert result.labels.tolist() == [2, 0]


def folder_layout(root: Path) -> Path:
    """The FERPlus folder layout with the shared label.csv files and placeholder images (listing needs no pixels)."""
    for folder in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        (root / folder).mkdir(parents=True)
        text = (REAL / "ferplus_label_csv" / folder / "label.csv").read_text()
        (root / folder / "label.csv").write_text(text)
        for line in text.splitlines():
            if line.split(",")[0]:
                (root / folder / line.split(",")[0]).touch()
    return root


@pytest.mark.parametrize("layout", ["csv", "folders"])
@pytest.mark.parametrize("rule", ["vote", "worst"])
def test_ferplus_vote_noise_in_both_layouts(cli, tmp_path, layout, rule):
    needs_ferplus()
    root = REAL if layout == "csv" else folder_layout(tmp_path / "ferplus")
    out = cli("noise", "preview", "--dataset", "ferplus", "--data-root", str(root), "--noise-source",
              "dataset", "--set", f"datasets.ferplus.options.real_noise={rule}")
    assert out.code == 0, out.err
    rate = float(re.search(r"([\d.]+)% of the whole training split", out.out).group(1))
    assert (15 < rate < 25) if rule == "vote" else (60 < rate < 80)
    assert "drawn with the run's seed" in out.out and "contempt" in out.out  # a column of the matrix


def test_fer2013_real_noise_says_how_contempt_is_handled(cli):
    needs_ferplus()
    out = cli("noise", "preview", "--dataset", "ferplus", "--data-root", str(REAL), "--noise-source", "dataset",
              "--set", "datasets.ferplus.options.real_noise=fer2013")
    assert out.code == 0, out.err
    assert "32.1% of the whole training split" in out.out
    assert "the 19 contempt faces keep their FER2013 label (always wrong)" in " ".join(out.out.split())


def test_prepare_lists_the_realised_rate_of_every_real_noise_option(cli):
    needs_ferplus()
    out = cli("prepare", "--dataset", "ferplus", "--data-root", str(REAL))
    assert out.code == 0, out.err
    for line in ("real_noise = fer2013: 32.1% of 4,835", "real_noise = vote:", "real_noise = worst:"):
        assert line in out.out


# ------------------------------------------------------------------------------ stored with the run
def test_a_run_stores_its_transitions_and_show_prints_them(cli, tmp_path):
    runs = tmp_path / "runs"
    done = cli("run", "-m", "standard", "-d", "synthfer", "-n", "0.4", "--noise-mode", "fer-confusion", "-e", "1",
               "--runs-dir", str(runs), "-q", *TINY)
    assert done.code == 0, done.err
    [run] = run_dirs(runs)
    noise = read_result(run)["noise"]
    matrix = np.asarray(noise["transitions"])
    stored = np.load(run / "noisy_labels.npy") if (run / "noisy_labels.npy").is_file() else None
    # the samples trained on: 96 minus the 10% validation hold-out
    assert matrix.shape == (7, 7) and matrix.sum() == noise["trained"]["samples"] == 86
    assert 1 - np.trace(matrix) / matrix.sum() == pytest.approx(noise["trained"]["rate"])
    if stored is not None:  # the stored labels are the whole split's
        assert stored.size == 96
    assert noise["mode"] == "fer-confusion" and isinstance(noise["generator_seed"], int)
    shown = cli("show", str(run))
    assert "Noise transitions" in shown.out and "fer-confusion noise at rate 0.40" in shown.out


def test_runs_drawn_from_votes_share_one_table_row_whatever_their_seed():
    from nlbench.report.runs import noise_label

    one = {"rate": 0.187, "mode": "flip", "source": "dataset", "realised_rate": 0.187, "rule": "vote"}
    two = {**one, "rate": 0.191, "realised_rate": 0.191}
    assert noise_label(one) == noise_label(two) == "real (vote)"
    assert noise_label({**one, "rule": None}) == "real (18.7%)"
