"""Facial landmark schemes, and landmarks carried through the training augmentation.

A dataset that knows where its faces' landmarks are names its scheme (:attr:`Dataset.landmark_scheme`)
and returns them from :meth:`Dataset.read_landmarks` as (N, L, 2) float32 (x, y) fractions of the
stored image, edge convention (0 = the left or top edge of the first pixel, 1 = the right or
bottom edge of the last), NaN for a missing point. A method that trains on them
(``needs_landmarks``) gets ``batch.landmarks``: B x L x 2 in pixels of the network input (0 to
``image_size``), moved by the same flip, scale and translation as ``batch.x`` (:func:`to_input`),
with left and right points swapped on flipped samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Scheme:
    """A landmark scheme: its point names, and which point each becomes in a mirrored face."""

    name: str
    points: tuple[str, ...]
    #: ``flip[k]``: the point whose position point k takes after a horizontal flip.
    flip: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.flip) != list(range(len(self.points))):
            raise ValueError(f"landmark scheme {self.name}: flip must be a permutation of the points")


#: The 19 points of AFLW (Köstinger et al. 2011) in the order LA-Net's landmark files use.
AFLW19 = Scheme(
    "aflw19",
    ("brow_outer_l", "brow_mid_l", "brow_inner_l", "brow_inner_r", "brow_mid_r", "brow_outer_r",
     "eye_outer_l", "eye_centre_l", "eye_inner_l", "eye_inner_r", "eye_centre_r", "eye_outer_r",
     "nostril_l", "nose_tip", "nostril_r", "mouth_corner_l", "mouth_centre", "mouth_corner_r", "chin"),
    (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18),
)

SCHEMES = {scheme.name: scheme for scheme in (AFLW19,)}


@dataclass
class Geometry:
    """The per-sample geometric draws of one augmented batch (B each), as :class:`Augmenter` applied them.

    In the augmenter's normalised coordinates (-1 to 1 across the image), an input point p goes
    to ``sign * scale * p_x + 2 tx`` and ``scale * p_y + 2 ty``, sign = -1 for a flipped sample.
    """

    flip: Tensor
    scale: Tensor
    tx: Tensor
    ty: Tensor

    @classmethod
    def identity(cls, n: int, device: torch.device) -> Geometry:
        """No flip, scale 1, no translation: the test transform (a plain resize)."""
        zeros = torch.zeros(n, device=device)
        return cls(torch.zeros(n, dtype=torch.bool, device=device), torch.ones(n, device=device), zeros, zeros)


def to_input(points: Tensor, geometry: Geometry, size: int, scheme: Scheme) -> Tensor:
    """Landmarks (B x L x 2, fractions of the stored image) in pixels of the augmented network input.

    NaN stays NaN; points may leave [0, size]. On flipped samples the points are re-indexed by the
    scheme's flip permutation, so that point 0 stays the image-left outer brow end.
    """
    sign = 1.0 - 2.0 * geometry.flip.to(points.dtype)
    x = 2.0 * points[..., 0] - 1.0
    y = 2.0 * points[..., 1] - 1.0
    x = sign[:, None] * geometry.scale[:, None] * x + 2.0 * geometry.tx[:, None]
    y = geometry.scale[:, None] * y + 2.0 * geometry.ty[:, None]
    out = torch.stack(((x + 1.0) * size / 2.0, (y + 1.0) * size / 2.0), dim=-1)
    swapped = out[:, list(scheme.flip)]
    return torch.where(geometry.flip[:, None, None], swapped, out)
