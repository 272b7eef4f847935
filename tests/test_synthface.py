"""Tests for nlbench.lib.synthface: API contract, determinism and that expressions are encoded in pixels."""

from __future__ import annotations

import numpy as np
import pytest

from nlbench.lib.synthface import CLASS_NAMES, render_faces, sample_labels

# At 32 px with default framing the mouth sits around rows 18-26 and the eyes/brows around rows 9-16.
MOUTH = (slice(None), slice(18, 27), slice(10, 22))
EYES = (slice(None), slice(9, 17), slice(8, 24))


def _paired_class_means(n: int = 60, size: int = 32, seed: int = 7, **kw) -> np.ndarray:
    """Class-mean images (7, 3, S, S) where every class reuses the same per-sample randomness."""
    # Image i depends only on (seed, i, label), so rendering all-c label vectors with one seed
    # holds identity and nuisance fixed and isolates the expression.
    return np.stack([render_faces(np.full(n, c), size, seed, **kw).astype(np.float64).mean(0)
                     for c in range(len(CLASS_NAMES))])


def test_class_names() -> None:
    assert CLASS_NAMES == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")


@pytest.mark.parametrize("size", [24, 32, 48, 128])
def test_shape_and_dtype(size: int) -> None:
    labels = np.arange(7)
    out = render_faces(labels, size, seed=0)
    assert out.shape == (7, 3, size, size)
    assert out.dtype == np.uint8
    assert out.std() > 10  # not a blank image


def test_empty_batch() -> None:
    assert render_faces(np.zeros(0, np.int64), 32, seed=0).shape == (0, 3, 32, 32)


def test_determinism_and_prefix_stability() -> None:
    labels = sample_labels(40, seed=3)
    a = render_faces(labels, 32, seed=5)
    b = render_faces(labels.copy(), 32, seed=5)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != render_faces(labels, 32, seed=6).tobytes()
    # Rendering a prefix gives the same first images (per-sample random streams).
    assert np.array_equal(render_faces(labels[:9], 32, seed=5), a[:9])
    # Options are part of the identity of the output.
    assert not np.array_equal(render_faces(labels, 32, seed=5, nuisance=0.0), a)


def test_sample_labels() -> None:
    y = sample_labels(2000, seed=1)
    assert y.dtype == np.int64 and y.shape == (2000,)
    counts = np.bincount(y, minlength=7)
    assert np.all(counts > 0)
    assert counts.argmax() == CLASS_NAMES.index("happiness")
    assert counts[CLASS_NAMES.index("disgust")] >= 40  # rare but not tiny
    assert np.array_equal(y, sample_labels(2000, seed=1))
    assert not np.array_equal(y, sample_labels(2000, seed=2))
    w = [1, 1, 0, 0, 0, 0, 0]
    assert set(np.unique(sample_labels(500, seed=0, class_weights=w))) == {0, 1}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        render_faces(np.array([7]), 32, seed=0)
    with pytest.raises(ValueError):
        render_faces(np.array([0]), 32, seed=0, ambiguous_share=1.5)
    with pytest.raises(ValueError):
        sample_labels(10, seed=0, class_weights=[1, 2, 3])


def test_expression_changes_face_not_background() -> None:
    labels0 = np.zeros(30, np.int64)
    imgs = [render_faces(labels0 + c, 32, seed=11) for c in range(7)]
    for c in range(1, 7):
        diff = np.abs(imgs[c].astype(int) - imgs[0].astype(int))
        # Background corner pixels are untouched by the expression ...
        assert diff[:, :, :3, :3].max() == 0
        # ... while the face changes.
        assert diff[:, :, 8:28, 8:24].mean() > 0.5


def test_classes_distinguishable_in_pixel_space() -> None:
    means = _paired_class_means()
    mouth = np.array([[np.abs(means[a][MOUTH] - means[b][MOUTH]).mean() for b in range(7)] for a in range(7)])
    eyes = np.array([[np.abs(means[a][EYES] - means[b][EYES]).mean() for b in range(7)] for a in range(7)])
    # Mouth-driven classes differ from neutral in the mouth region.
    for name in ("happiness", "surprise", "sadness", "disgust", "fear"):
        assert mouth[0, CLASS_NAMES.index(name)] > 0.4, name
    # Every pair of classes differs in the mouth or the eye/brow region.
    off = ~np.eye(7, dtype=bool)
    assert np.maximum(mouth, eyes)[off].min() > 1.0
    # Surprise (open mouth) is the most distinct mouth.
    assert mouth[CLASS_NAMES.index("surprise")].sum() == mouth.sum(1).max()


def test_nearest_centroid_beats_chance_on_clean_faces() -> None:
    # Unpaired check: class centroids from one seed classify faces from another seed.
    y = np.repeat(np.arange(7), 30)
    train = render_faces(y, 32, seed=0, nuisance=0.0, ambiguous_share=0.0).astype(np.float32)
    test = render_faces(y, 32, seed=1, nuisance=0.0, ambiguous_share=0.0).astype(np.float32)
    centroids = train.reshape(7, 30, -1).mean(1)
    dist = ((test.reshape(len(y), 1, -1) - centroids[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == y).mean() > 0.3  # chance is 1/7


def test_ambiguous_share_weakens_expressions() -> None:
    clear = _paired_class_means(n=40, ambiguous_share=0.0)
    vague = _paired_class_means(n=40, ambiguous_share=1.0)
    # Mean distance of the expressive classes to neutral shrinks when every sample is ambiguous.
    assert np.abs(vague[1:] - vague[0]).mean() < 0.8 * np.abs(clear[1:] - clear[0]).mean()
