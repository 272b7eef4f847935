"""Batched augmentation: shapes, per-sample randomness, reproducibility, the test transform."""

from __future__ import annotations

import torch

from nlbench.data.augment import Augmenter, hsv_to_rgb, random_erasing, rgb_to_hsv

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


def test_training_flip_mirrors_the_image():
    # scn: with p = 0.25 a flip, p = 0.25 pixel noise, then erasing with p = 0.5. Of 512 copies of
    # an asymmetric image, the untouched ones equal the test transform and the flipped ones its mirror.
    image = _images(1, size=12)
    batch = image.repeat(512, 1, 1, 1)
    aug = Augmenter("scn", 12, MEAN, STD, torch.device("cpu"))
    out = aug.train(batch, torch.Generator().manual_seed(0))
    plain, mirrored = aug.test(image)[0], aug.test(image)[0].flip(-1)
    assert not torch.allclose(plain, mirrored)
    n_plain = sum(bool(torch.allclose(x, plain, atol=1e-5)) for x in out)
    n_mirrored = sum(bool(torch.allclose(x, mirrored, atol=1e-5)) for x in out)
    # expected 512 * 0.5 * 0.5 = 128 and 512 * 0.25 * 0.5 = 64
    assert 90 < n_plain < 170 and 35 < n_mirrored < 95


def test_cct_pipeline_flips_about_half_of_the_images():
    image = _images(1, size=10)
    aug = Augmenter("cct", 10, MEAN, STD, torch.device("cpu"))
    out = aug.train(image.repeat(1024, 1, 1, 1), torch.Generator().manual_seed(1))
    plain, mirrored = aug.test(image)[0], aug.test(image)[0].flip(-1)
    n_plain = sum(bool(torch.allclose(x, plain, atol=1e-5)) for x in out)
    n_mirrored = sum(bool(torch.allclose(x, mirrored, atol=1e-5)) for x in out)
    # untouched by noise, jitter/affine and erasing: 1024 * 0.75 * 0.5 * 0.5 = 192, half of them flipped
    assert n_plain > 40 and n_mirrored > 40 and 0.6 < n_plain / n_mirrored < 1.6


def test_resize_upsamples_bilinearly_in_both_transforms():
    # A horizontal ramp v(j) = 8 j of width 8, upsampled to 16: output column i samples the input at
    # s = (i + 0.5) / 2 - 0.5 (half-pixel centres), clamped to the image: value 8 * clamp(s, 0, 7).
    ramp = (torch.arange(8) * 8).to(torch.uint8).view(1, 1, 1, 8).expand(1, 3, 8, 8).contiguous()
    expected_row = [8 * min(max((i + 0.5) / 2 - 0.5, 0.0), 7.0) for i in range(16)]
    expected = (torch.tensor(expected_row) / 255 - 0.5) / 0.25
    aug = Augmenter("scn", 16, MEAN, STD, torch.device("cpu"))
    tested = aug.test(ramp)
    assert tested.shape == (1, 3, 16, 16)
    assert torch.allclose(tested[0, 0, 5], expected, atol=1e-5)
    # the training path resizes in its fused resampling: an untouched sample equals the test transform,
    # border pixels included (no darkened edge)
    out = aug.train(ramp.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    untouched = [x for x in out if torch.allclose(x, tested[0], atol=1e-5)]
    assert len(untouched) > 5


def test_resize_downsamples_with_antialiasing():
    # 2x downsampling with antialiasing averages neighbourhoods: a checkerboard becomes flat grey.
    board = ((torch.arange(16).view(1, 16) + torch.arange(16).view(16, 1)) % 2 * 255).to(torch.uint8)
    images = board.view(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous()
    out = Augmenter("none", 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu")).test(images)
    assert torch.allclose(out[0, :, 1:-1, 1:-1], torch.full((3, 6, 6), 0.5), atol=0.02)


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


def test_eac_pipeline_is_noise_or_nothing_never_a_flip_then_erasing_and_erase_only_erases():
    # eac: p = 0.5 Gaussian pixel noise, never a flip, then erasing with p = 0.5. Of 1,024 copies of an
    # asymmetric image: untouched ~ 0.5 * 0.5 = 256, mirrored none; erase: ~512 untouched, none noisy.
    image = _images(1, size=12)
    batch = image.repeat(1024, 1, 1, 1)
    plain = Augmenter("none", 12, MEAN, STD, torch.device("cpu")).test(image)[0]
    mirrored = plain.flip(-1)
    for pipeline, low, high in (("eac", 200, 312), ("erase", 450, 574)):
        out = Augmenter(pipeline, 12, MEAN, STD, torch.device("cpu")).train(batch, torch.Generator().manual_seed(2))
        n_plain = sum(bool(torch.allclose(x, plain, atol=1e-5)) for x in out)
        assert low < n_plain < high, (pipeline, n_plain)
        assert not any(bool(torch.allclose(x, mirrored, atol=1e-5)) for x in out)
        # Every sample differs from the plain image only where it was erased, or everywhere (noise).
        changed = ~torch.isclose(out, plain.expand_as(out), atol=1e-5)
        erased_only = ((out == 0) | ~changed).all(dim=(1, 2, 3))
        if pipeline == "erase":
            assert bool(erased_only.all())
        else:
            assert 0.4 < 1 - erased_only.float().mean().item() < 0.6  # the noisy half
