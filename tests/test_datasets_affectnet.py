"""Tests of the affectnet7/affectnet8 dataset plugins on a small AffectNet layout written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nlbench import DataError
from nlbench.dataset import AFFECTNET_ORDER
from nlbench.plugins import get_registry

HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
BOX = (10, 5, 20, 30)  # face_x, face_y, face_width, face_height
FACE = (200, 30, 30)


def write_photo(path: Path) -> None:
    """A 60x50 photo, noisy, with a solid 'face' inside BOX."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    x, y, w, h = BOX
    pixels[y : y + h, x : x + w] = FACE
    Image.fromarray(pixels).save(path)  # PNG: lossless, so the crop is exact


def write_list(path: Path, rows: list[tuple[str, object, tuple]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f'{p},{",".join(map(str, box))},"1.0;2.0;3.0",{e},0.1,-0.2' for p, e, box in rows]
    path.write_text("\n".join(lines) + "\n")


def make_affectnet(root: Path) -> Path:
    lists, images = root / "Manually_Annotated_file_lists", root / "Manually_Annotated_Images"
    train = [(f"{e % 3}/train{e}.png", e, BOX) for e in range(11)]  # every expression id 0..10
    train += [("1/missing.png", 2, BOX), ("2/flat.png", 3, (10, 5, 0, 30)), ("0/odd.png", "x", BOX)]
    write_list(lists / "training.csv", train)
    write_list(lists / "validation.csv", [(f"9/val{e}.png", e, BOX) for e in range(8)])
    for path, _, _ in train + [(f"9/val{e}.png", e, BOX) for e in range(8)]:
        if "missing" not in path:
            write_photo(images / path)
    auto_list = root / "Automatically_Annotated_file_lists" / "automatically_annotated.csv"
    write_list(auto_list, [(f"5/auto{e}.png", e, BOX) for e in (1, 1, 6, 9)])
    for e in (1, 6, 9):
        write_photo(root / "Automatically_Annotated_Images" / "5" / f"auto{e}.png")
    return root


def affectnet(name: str, root: Path, **options):
    return get_registry().dataset(name)(root, options)


def test_expressions_kept_per_variant(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path)
    eight, seven = affectnet("affectnet8", root), affectnet("affectnet7", root)
    eight.check()
    assert eight.class_names == AFFECTNET_ORDER and seven.class_names == AFFECTNET_ORDER[:7]
    assert list(eight.table("train").labels) == list(range(8))
    assert list(seven.table("train").labels) == list(range(7))
    assert list(eight.table("test").labels) == list(range(8)) and len(seven.table("test")) == 7
    assert eight.table("train").noisy_labels is None


def test_problems_are_precise(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path)
    problems = "\n".join(affectnet("affectnet8", root).table("train").problems)
    images = root / "Manually_Annotated_Images"
    assert f"training.csv line 13: image {images / '1/missing.png'} does not exist; skipped" in problems
    assert "training.csv line 14: face box (10, 5, 0, 30) is not a box with positive width and height" in problems
    assert "training.csv line 15: expression 'x' is not an AffectNet expression id (0..10); skipped" in problems
    assert len(problems.splitlines()) == 3  # expressions 8..10 are dropped by design, not reported


def test_face_box_crop_and_cropped_option(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path)
    ds = affectnet("affectnet8", root)
    ref = ds.table("test").refs[0]
    assert ref == (str(root / "Manually_Annotated_Images/9/val0.png"), BOX)
    face = ds.read_image(ref)
    assert face.shape == (30, 20, 3) and (face == FACE).all()
    cropped = affectnet("affectnet8", root, cropped=True)
    assert cropped.read_image(cropped.table("test").refs[0]).shape == (50, 60, 3)
    assert len(cropped.table("train")) == 9  # the zero-width box does not matter for pre-cropped images
    with pytest.raises(ValueError, match="lies outside"):
        ds.read_image((ref[0], (100, 100, 10, 10)))


def test_automatic_list_is_the_noisy_training_set(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path)
    ds = affectnet("affectnet8", root, train_list="automatic")
    train = ds.table("train")
    assert list(train.labels) == [1, 6] and list(train.noisy_labels) == [1, 6]  # no clean labels exist
    assert "auto1.png" in train.refs[0][0]
    assert train.problems == ["automatically_annotated.csv line 3: 5/auto1.png already listed on line 2; skipped"]
    assert len(ds.table("test")) == 8  # always the manual validation set


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Manually_Annotated_file_lists/training.csv does not exist.*manual_lists"):
        affectnet("affectnet7", tmp_path).check()
    root = make_affectnet(tmp_path)
    with pytest.raises(DataError, match=r"nowhere does not exist: unpack the AffectNet images there.*manual_images"):
        affectnet("affectnet7", root, manual_images="nowhere").check()
    (root / "bad.csv").write_text("path,label\na.jpg,1\n")
    with pytest.raises(DataError, match=r"lacks the column\(s\) subDirectory_filePath, face_x"):
        affectnet("affectnet7", root, automatic_list="bad.csv", train_list="automatic").table("train")


def test_declared_settings() -> None:
    eight, seven = (get_registry().dataset(n) for n in ("affectnet8", "affectnet7"))
    for cls in (eight, seven):
        assert cls.mean == cls.std == (0.5, 0.5, 0.5) and cls.augmentation == "affectnet"
        assert cls.train_defaults["classifier_lr"] == 1e-3 and cls.train_defaults["balanced_sampling"] is True
    assert eight.train_defaults["epochs"] == 30 and seven.train_defaults["epochs"] == 25
    assert eight.to_affectnet == tuple(range(8)) and seven.to_affectnet == tuple(range(7))


# iBUG-68's mirror: the point each point becomes in a horizontally flipped face (0-based).
IBUG_FLIP = [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
             45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
             54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]


def landmark_text(points) -> str:
    return '"' + ";".join(f"{v:g}" for v in np.asarray(points, dtype=float).ravel()) + '"'


def make_landmark_affectnet(root: Path) -> Path:
    """Three training faces: one inside its 60x50 photo, one whose box leaves the photo, one without points."""
    make_affectnet(root)
    k = np.arange(68)
    ramp = np.stack([10 + 0.25 * k, 5 + 0.4 * k], axis=1)  # point k at (10 + k/4, 5 + 0.4 k)
    rows = [("0/a.png", 1, BOX, landmark_text(ramp)),
            ("0/b.png", 2, (50, 30, 20, 30), landmark_text(np.tile([55.0, 40.0], (68, 1)))),
            ("0/c.png", 3, BOX, '"1.0;2.0;3.0"'),
            ("0/a.png", 4, BOX, landmark_text(ramp + 1))]  # listed twice: the first row counts
    lines = [HEADER] + [f'{p},{",".join(map(str, box))},{marks},{e},0.1,-0.2' for p, e, box, marks in rows]
    (root / "Manually_Annotated_file_lists" / "training.csv").write_text("\n".join(lines) + "\n")
    for path, *_ in rows[:3]:
        write_photo(root / "Manually_Annotated_Images" / path)
    return root


def test_landmarks_are_the_68_points_mapped_to_aflw19_in_the_clipped_face_box(tmp_path: Path) -> None:
    from nlbench.landmarks import AFLW19

    ds = affectnet("affectnet8", make_landmark_affectnet(tmp_path))
    assert ds.landmark_scheme == "aflw19"
    points = ds.read_landmarks("train")
    assert points.shape == (3, 19, 2) and points.dtype == np.float32
    # Face a: box (10, 5, 20, 30); point k sits at (k/4, 0.4 k) pixels inside it.
    hand = {0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26, 6: 36, 7: 38.5, 8: 39, 9: 42, 10: 44.5, 11: 45,
            12: 31, 13: 30, 14: 35, 15: 48, 16: 64, 17: 54, 18: 8}  # AFLW point: iBUG point (or mean of points)
    for aflw, ibug in hand.items():
        np.testing.assert_allclose(points[0, aflw], (0.25 * ibug / 20, 0.4 * ibug / 30), rtol=1e-6)
    # Face b: box (50, 30, 20, 30) clipped by the 60x50 photo to 10 x 20 pixels, as read_image crops it.
    np.testing.assert_allclose(points[1], np.full((19, 2), 0.5), rtol=1e-6)
    assert np.isnan(points[2]).all()  # three numbers are not 68 points
    assert len(AFLW19.points) == 19


def test_the_68_to_19_map_keeps_left_and_right_apart() -> None:
    """A mirrored face's 19 points are the mirrored 19 points, re-indexed by AFLW19's flip."""
    from datasets.affectnet import ibug_to_box_fractions
    from nlbench.landmarks import AFLW19

    face = np.random.default_rng(3).uniform(5, 45, (68, 2))
    mirrored = np.stack([50.0 - face[IBUG_FLIP, 0], face[IBUG_FLIP, 1]], axis=1)
    box = (0, 0, 50, 50)
    aflw = ibug_to_box_fractions(face, box, 50, 50)
    expected = np.stack([1.0 - aflw[:, 0], aflw[:, 1]], axis=1)[list(AFLW19.flip)]
    np.testing.assert_allclose(ibug_to_box_fractions(mirrored, box, 50, 50), expected, atol=1e-6)


def test_landmarks_follow_the_list_and_not_precropped_images(tmp_path: Path) -> None:
    root = make_landmark_affectnet(tmp_path)
    before = affectnet("affectnet8", root).landmark_version
    cropped = affectnet("affectnet8", root, cropped=True)
    assert cropped.landmark_scheme is None and cropped.read_landmarks("train") is None
    listing = root / "Manually_Annotated_file_lists" / "training.csv"
    listing.write_text(listing.read_text().replace("55;40", "56;40", 1))
    assert affectnet("affectnet8", root).landmark_version != before


def test_a_run_hears_how_many_faces_train_without_landmarks(tmp_path: Path) -> None:
    from nlbench.train.assemble import training_landmarks

    ds = affectnet("affectnet8", make_landmark_affectnet(tmp_path))
    heard = []

    class Reporter:
        def message(self, text):
            heard.append(text)

    scheme, points = training_landmarks(ds, 3, np.array([0, 2]), torch.device("cpu"), Reporter())
    assert scheme.name == "aflw19" and tuple(points.shape) == (2, 19, 2)
    assert heard == ["1 of 2 training faces of affectnet8 have no aflw19 landmarks and train without a landmark "
                     "target"]
    heard.clear()
    training_landmarks(ds, 3, np.array([0, 1]), torch.device("cpu"), Reporter())
    assert heard == []


def test_a_face_without_a_landmarks_column_is_refused_with_the_ablation_named(tmp_path: Path) -> None:
    root = make_landmark_affectnet(tmp_path)
    listing = root / "Manually_Annotated_file_lists" / "training.csv"
    frame = listing.read_text().replace("facial_landmarks", "marks")
    listing.write_text(frame)
    with pytest.raises(DataError, match=r"no facial_landmarks column.*landmarks=\"none\""):
        affectnet("affectnet8", root).read_landmarks("train")
