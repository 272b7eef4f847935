"""Batched training augmentation with per-sample random parameters, on the training device.

The pipelines follow the official CCT/SCN code (docs/methods.md §1.2), one random draw per sample and
no per-sample Python:

- ``cct`` (RAF-DB, FERPlus): with p=0.5 one of {horizontal flip, Gaussian pixel noise with
  variance 30 (in 0..255 units)}; horizontal flip p=0.5; with p=0.5 *both* colour jitter
  (brightness, contrast, saturation, hue = 0.25) and affine (translate 10%, scale 1-1.25); resize;
  normalise; random erasing (p=0.5, area 2-25%, aspect 0.3-3.3, value 0).
- ``affectnet``: flip p=0.5, colour jitter and affine always, resize, normalise, no erasing.
- ``scn``: the flip-or-noise step, resize, normalise, random erasing.
- ``eac``: with p=0.5 Gaussian pixel noise (never a flip: the official EAC code's first view),
  resize, normalise, random erasing.
- ``erase``: resize, normalise, random erasing (EAC's code-form second view, made from the
  flipped raw image).
- ``none``: resize and normalise only (also the test transform of every pipeline).

Flip, affine and resize are fused into one ``grid_sample``: the image is resampled once, straight
from the stored size to the training size, which is why this is written here rather than as a
chain of kornia/torchvision ops that resample twice. Deviations from torchvision, documented:
colour-jitter operations run in a fixed order (torchvision shuffles them per call), and the
affine translation is continuous rather than rounded to whole pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from nlbench.landmarks import Geometry
from nlbench.settings import PIPELINES  # the one list, shared with the settings' choices

NOISE_STD = math.sqrt(30.0) / 255.0
JITTER = 0.25
TRANSLATE = 0.1
SCALE = (1.0, 1.25)
ERASE_AREA = (0.02, 0.25)
ERASE_RATIO = (0.3, 3.3)
ERASE_TRIES = 10
#: The pipelines that end with random erasing.
ERASING = ("cct", "scn", "eac", "erase")


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma of an RGB batch in [0, 1], shape B x 1 x H x W."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def rgb_to_hsv(x: Tensor) -> Tensor:
    """Batched RGB -> HSV, all channels in [0, 1]."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack((hue, sat, maxc), dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Batched HSV -> RGB, all channels in [0, 1]."""
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    h6 = (h % 1.0) * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    sector = sector.long() % 6
    # Each sector takes (r, g, b) from a fixed choice of (v, t, p, q).
    r = torch.stack((v, q, p, p, t, v), dim=1)
    g = torch.stack((t, v, v, q, p, p), dim=1)
    b = torch.stack((p, p, t, v, v, q), dim=1)
    index = sector.unsqueeze(1)
    return torch.cat((r.gather(1, index), g.gather(1, index), b.gather(1, index)), dim=1)


def color_jitter(x: Tensor, apply: Tensor, gen: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation and hue jitter (0.25 each) on the samples where ``apply``."""
    n, device = x.shape[0], x.device
    keep = (~apply).float()
    view = (n, 1, 1, 1)

    def factor() -> Tensor:  # identity (1.0) where the jitter is not applied
        f = _uniform(n, 1 - JITTER, 1 + JITTER, gen, device)
        return (f * (1 - keep) + keep).view(view)

    x = (x * factor()).clamp_(0, 1)
    mean = grayscale(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * factor() + mean).clamp_(0, 1)
    gray = grayscale(x)
    x = ((x - gray) * factor() + gray).clamp_(0, 1)
    shift = _uniform(n, -JITTER, JITTER, gen, device) * (1 - keep)
    # Always converted, even when no sample draws a hue shift: testing for that would cost a
    # device-to-host synchronisation every step.
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift.view(n, 1, 1)) % 1.0
    return hsv_to_rgb(hsv)


def random_erasing(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """Erase (set to 0) one random rectangle per sample with probability p, as torchvision does."""
    n, _, height, width = x.shape
    device = x.device
    apply = torch.rand(n, generator=gen, device=device) < p
    area = height * width * _uniform(n * ERASE_TRIES, *ERASE_AREA, gen, device).view(n, ERASE_TRIES)
    log_ratio = _uniform(n * ERASE_TRIES, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), gen, device)
    ratio = torch.exp(log_ratio).view(n, ERASE_TRIES)
    h = torch.sqrt(area * ratio).round().long()
    w = torch.sqrt(area / ratio).round().long()
    valid = (h < height) & (w < width)
    # torchvision retries up to 10 times; take the first try that fits, none -> no erasing.
    first = torch.argmax(valid.int(), dim=1, keepdim=True)
    found = valid.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    w = w.gather(1, first).squeeze(1)
    top = (torch.rand(n, generator=gen, device=device) * (height - h + 1).float()).long()
    left = (torch.rand(n, generator=gen, device=device) * (width - w + 1).float()).long()
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + h).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + w).view(n, 1, 1))
    )
    mask = inside & (apply & found).view(n, 1, 1)
    return x.masked_fill(mask.unsqueeze(1), 0.0)


class Augmenter:
    """Turns uint8 image batches into normalised float batches at the training size."""

    def __init__(
        self,
        pipeline: str,
        size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown augmentation pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")
        self.pipeline = pipeline
        self.size = size
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.channels_last = channels_last

    def _finish(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def test(self, images: Tensor) -> Tensor:
        """Resize and normalise (the test transform of every pipeline)."""
        x = images.float().div_(255.0)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self._finish(x)

    def train(self, images: Tensor, gen: torch.Generator) -> Tensor:
        """Augment a uint8 batch (B x 3 x H x W, on the training device) with per-sample draws."""
        return self.train_geometry(images, gen)[0]

    def train_geometry(self, images: Tensor, gen: torch.Generator) -> tuple[Tensor, Geometry]:
        """:meth:`train`, and the flip, scale and translation it drew per sample (to move landmarks
        with the image, :func:`nlbench.landmarks.to_input`). The draws are those of :meth:`train`."""
        if self.pipeline == "none":
            return self.test(images), Geometry.identity(images.shape[0], images.device)
        x = images.float().div_(255.0)
        n, device = x.shape[0], x.device
        flip = torch.zeros(n, dtype=torch.bool, device=device)
        if self.pipeline in ("cct", "scn"):
            # basic_aug: with p=0.5 either a flip or Gaussian pixel noise, chosen uniformly.
            basic = torch.rand(n, generator=gen, device=device) < 0.5
            pick_flip = torch.rand(n, generator=gen, device=device) < 0.5
            flip = basic & pick_flip
            noisy = (basic & ~pick_flip).view(n, 1, 1, 1)
            noise = torch.randn(x.shape, generator=gen, device=device) * NOISE_STD
            x = torch.where(noisy, (x + noise).clamp_(0, 1), x)
        elif self.pipeline == "eac":
            noisy = (torch.rand(n, generator=gen, device=device) < 0.5).view(n, 1, 1, 1)
            noise = torch.randn(x.shape, generator=gen, device=device) * NOISE_STD
            x = torch.where(noisy, (x + noise).clamp_(0, 1), x)
        if self.pipeline in ("cct", "affectnet"):
            flip = flip ^ (torch.rand(n, generator=gen, device=device) < 0.5)
            if self.pipeline == "cct":
                geometric = torch.rand(n, generator=gen, device=device) < 0.5
            else:
                geometric = torch.ones(n, dtype=torch.bool, device=device)
            x = color_jitter(x, geometric, gen)
            scale = torch.where(geometric, _uniform(n, *SCALE, gen, device), torch.ones(n, device=device))
            # translate is a fraction of the image side; normalised coordinates span 2 units.
            tx = torch.where(geometric, _uniform(n, -TRANSLATE, TRANSLATE, gen, device), torch.zeros(n, device=device))
            ty = torch.where(geometric, _uniform(n, -TRANSLATE, TRANSLATE, gen, device), torch.zeros(n, device=device))
        else:
            scale = torch.ones(n, device=device)
            tx = ty = torch.zeros(n, device=device)
        sign = 1.0 - 2.0 * flip.float()
        # Output pixel -> input pixel: undo translation and scale, then the flip of the input.
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = sign / scale
        theta[:, 0, 2] = -sign * 2 * tx / scale
        theta[:, 1, 1] = 1.0 / scale
        theta[:, 1, 2] = -2 * ty / scale
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        # Edge pixels are clamped (as the test transform's resize does: zero padding would darken
        # the border of every upsampled image); only samples outside the image are filled with 0,
        # like the translation fill of torchvision's RandomAffine.
        inside = (grid.abs() <= 1.0).all(dim=-1).unsqueeze(1)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) * inside
        x = (x - self.mean) / self.std
        if self.pipeline in ERASING:
            x = random_erasing(x, gen)
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        return x, Geometry(flip, scale, tx, ty)
