"""Facial landmarks: synthfer's analytic points, their path through the augmentation, and the run id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlbench.data.augment import Augmenter
from nlbench.landmarks import AFLW19, Geometry, Scheme, to_input
from nlbench.lib.synthface import face_landmarks, render_faces, sample_labels

ONE = Scheme("one", ("p",), (0,))
PAIR = Scheme("pair", ("left", "right"), (1, 0))


def test_a_point_moves_as_the_hand_computed_flip_scale_and_shift_say():
    # (0.25, 0.5) of the image: normalised (-0.5, 0). Scale 1.25, tx 0.1, ty -0.05, not flipped:
    # x = 1.25 * -0.5 + 0.2 = -0.425 -> (1 - 0.425) * 16 = 9.2 px; y = 0 - 0.1 -> 0.9 * 16 = 14.4 px.
    points = torch.tensor([[[0.25, 0.5]], [[0.25, 0.5]]])
    geometry = Geometry(torch.tensor([False, True]), torch.tensor([1.25, 1.25]), torch.tensor([0.1, 0.1]),
                        torch.tensor([-0.05, -0.05]))
    out = to_input(points, geometry, 32, ONE)
    # flipped: x = -1.25 * -0.5 + 0.2 = 0.825 -> 1.825 * 16 = 29.2 px
    assert torch.allclose(out, torch.tensor([[[9.2, 14.4]], [[29.2, 14.4]]]), atol=1e-5)
    assert torch.isnan(to_input(torch.full((1, 1, 2), float("nan")), Geometry.identity(1, torch.device("cpu")),
                                32, ONE)).all()


def _dots(positions: np.ndarray, size: int = 64) -> torch.Tensor:
    """Black images, each with a white 3 x 3 dot centred on each of its points (fractions of the side)."""
    images = torch.zeros(len(positions), 3, size, size, dtype=torch.uint8)
    for k, sample in enumerate(positions):
        for value, (x, y) in zip((255, 128), sample):
            col, row = int(x * size), int(y * size)
            images[k, :, row - 1:row + 2, col - 1:col + 2] = value
    return images


@pytest.mark.parametrize("pipeline", ["cct", "affectnet", "scn", "none"])
def test_landmarks_land_where_the_augmentation_moved_the_dot(pipeline):
    """The brightest pixel of each augmented image is where the transformed landmark says; on a
    flipped image the two points swap names, so point 0 stays the image-left one."""
    rng = np.random.default_rng(0)
    n, size = 64, 48
    left = np.stack([rng.uniform(0.25, 0.4, n), rng.uniform(0.3, 0.7, n)], axis=1)
    right = np.stack([rng.uniform(0.6, 0.75, n), rng.uniform(0.3, 0.7, n)], axis=1)
    positions = np.stack([left, right], axis=1)
    images = _dots(positions)
    points = torch.as_tensor((np.floor(positions * 64) + 0.5) / 64, dtype=torch.float32)  # dot centres
    # Mean 0.5: black is -0.5, a dot +0.5, and what random erasing blanked exactly 0.
    augmenter = Augmenter(pipeline, size, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    x, geometry = augmenter.train_geometry(images, gen)
    assert torch.equal(x, augmenter.train(images, torch.Generator().manual_seed(3)))  # the same draws
    moved = to_input(points, geometry, size, PAIR)
    gray = x.mean(dim=1)
    # The same draws on white images: random erasing leaves exactly 0 (the mean) where it blanked.
    erased = augmenter.train(torch.full_like(images, 255), torch.Generator().manual_seed(3)).mean(dim=1) == 0
    checked = 0
    for k in range(n):
        point = moved[k, 0]  # the image-left point: where the brighter of the two dots went, unless flipped
        row, col = int(point[1]), int(point[0])
        if not (2 <= row < size - 2 and 2 <= col < size - 2):
            continue  # moved out of the picture
        window = gray[k, row - 2:row + 3, col - 2:col + 3]
        if erased[k, row - 2:row + 3, col - 2:col + 3].any():
            continue
        assert window.max() > -0.35, (k, point)  # background: -0.5
        assert float(moved[k, 0, 0]) < float(moved[k, 1, 0])  # point 0 is left of point 1 after any flip
        checked += 1
    assert checked > n // 2
    if pipeline != "none":
        assert geometry.flip.any() and not geometry.flip.all()


def test_synthfer_points_sit_on_the_features_the_renderer_drew():
    labels = sample_labels(200, 0)
    size = 96
    images = render_faces(labels, size, 0, nuisance=0.25).astype(np.float32).mean(axis=1)
    points = face_landmarks(labels, 0, nuisance=0.25)
    assert points.shape == (200, 19, 2) and points.dtype == np.float32
    rows = np.clip((points[..., 1] * size).astype(int), 0, size - 1)
    cols = np.clip((points[..., 0] * size).astype(int), 0, size - 1)
    value = images[np.arange(200)[:, None], rows, cols]
    # Eye centres are on the dark iris (grey 0.08 of 255), for nearly every face (glasses and hands
    # cover a few); a shift of a few pixels would land on the white of the eye or the skin.
    assert (value[:, [7, 10]] < 60).mean() > 0.9, value[:, [7, 10]].mean()
    assert np.median(value[:, 18]) > 60  # the chin point is on skin, not on the dark background
    frontal = face_landmarks(labels[:10], 0, nuisance=0.0)  # no pose: mirror-symmetric about the middle
    pairs = [(k, AFLW19.flip[k]) for k in range(19)]
    for k, mirror in pairs:
        assert np.allclose(frontal[:, k, 0] + frontal[:, mirror, 0], 1.0, atol=1e-5)


def _probe_class():
    import torch.nn.functional as F

    from nlbench import Method

    class Probe(Method):
        name = "landmark_probe"
        needs_landmarks = True
        seen: list = []

        @classmethod
        def validate(cls, hp, settings):
            if not settings["has_landmarks"]:
                raise ValueError("needs a dataset with landmarks")

        def build(self, ctx):
            super().build(ctx)
            self.net = ctx.backbone()
            self.optimizer = ctx.optimizer([self.net])

        def train_step(self, batch, phase, epoch):
            Probe.seen.append((batch.x.shape, batch.landmarks.detach().clone()))
            logits = self.net(batch.x).float()
            loss = F.cross_entropy(logits, batch.y)
            self.optimizer.zero_grad(set_to_none=True)
            self.ctx.backward(loss)
            self.optimizer.step()
            return {"loss": loss.detach(), "logits": logits.detach()}

        def predict(self, x):
            return self.net(x)

    return Probe


def test_a_method_that_needs_landmarks_gets_them_moved_with_each_batch(tmp_path):
    from nlbench.testing import check_method

    probe = _probe_class()
    check_method(probe, tmp_path=tmp_path, quiet=True)
    shape, landmarks = probe.seen[0]
    assert landmarks.shape == (shape[0], 19, 2) and torch.isfinite(landmarks).all()
    assert 0.1 * shape[-1] < float(landmarks[..., 0].mean()) < 0.9 * shape[-1]  # pixels of the input, on the face


def test_landmarks_enter_the_run_id_only_of_runs_that_train_on_them(tmp_path):
    from nlbench.errors import ConfigError
    from nlbench.registry import Entry
    from nlbench.spec.config import load_config
    from nlbench.spec.resolve import RunRequest, resolve_spec
    from nlbench.testing import _registry_with

    registry = _registry_with(_probe_class())
    config = load_config(None)
    spec = resolve_spec(RunRequest(method="landmark_probe", dataset="synthfer"), config, registry)
    assert spec.data.landmarks == "aflw19@1" and spec.to_json()["data"]["landmarks"] == "aflw19@1"
    standard = resolve_spec(RunRequest(method="standard", dataset="synthfer"), config, registry)
    assert standard.data.landmarks is None and "landmarks" not in standard.to_json()["data"]
    synthfer = registry.datasets["synthfer"]
    plain = type("NoLandmarks", (synthfer.cls,), {"name": "nolandmarks", "landmark_scheme": None})
    registry.datasets["nolandmarks"] = Entry("nolandmarks", plain, synthfer.plugin)
    with pytest.raises(ConfigError, match="needs a dataset with landmarks"):
        resolve_spec(RunRequest(method="landmark_probe", dataset="nolandmarks"), config, registry)
