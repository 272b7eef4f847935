"""Batched augmentation: shapes, per-sample randomness, reproducibility, the test transform."""

from __future__ import annotations

import torch

from nlbench.augment import Augmenter, hsv_to_rgb, random_erasing, rgb_to_hsv

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _images(n=64, size=20):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)


def test_test_transform_is_resize_and_normalise_only():
    images = _images(size=16)
    out = Augmenter("cct", 16, MEAN, STD, torch.device("cpu")).test(images)
    expected = (images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(out, expected, atol=1e-6)


def test_train_output_shape_and_reproducibility():
    aug = Augmenter("cct", 32, MEAN, STD, torch.device("cpu"))
    images = _images()
    a = aug.train(images, torch.Generator().manual_seed(5))
    b = aug.train(images, torch.Generator().manual_seed(5))
    c = aug.train(images, torch.Generator().manual_seed(6))
    assert a.shape == (64, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_parameters_are_drawn_per_sample():
    # 64 copies of one image: per-sample draws make the augmented copies differ from each other.
    image = _images(1)
    batch = image.repeat(64, 1, 1, 1)
    out = Augmenter("cct", 20, MEAN, STD, torch.device("cpu")).train(batch, torch.Generator().manual_seed(0))
    distinct = {tuple(x.flatten()[:50].tolist()) for x in out}
    assert len(distinct) > 32
    identity = Augmenter("cct", 20, MEAN, STD, torch.device("cpu")).test(image)[0]
    unchanged = sum(torch.allclose(x, identity, atol=1e-5) for x in out)
    assert 0 < unchanged < 32  # some samples draw no augmentation at all (all ops are random)


def test_none_pipeline_equals_the_test_transform():
    images = _images(size=24)
    aug = Augmenter("none", 24, MEAN, STD, torch.device("cpu"))
    assert torch.equal(aug.train(images, torch.Generator().manual_seed(0)), aug.test(images))


def test_horizontal_flip_only_for_affectnet_without_jitter_is_exact():
    # A flipped sample of the scn pipeline (no noise, no erasing hit) equals the mirrored image.
    image = _images(1, size=8)
    aug = Augmenter("none", 8, MEAN, STD, torch.device("cpu"))
    flipped_input = aug.test(image.flip(-1))
    assert torch.allclose(flipped_input, aug.test(image).flip(-1))


def test_hsv_round_trip():
    x = torch.rand(4, 3, 5, 5)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)


def test_random_erasing_area_within_bounds():
    x = torch.ones(200, 3, 32, 32)
    out = random_erasing(x, torch.Generator().manual_seed(0), p=1.0)
    erased = (out[:, 0] == 0).float().mean(dim=(1, 2))
    hit = erased[erased > 0]
    assert len(hit) > 150
    assert hit.min() >= 0.015 and hit.max() <= 0.26
    # erasing is the same on every channel
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)
