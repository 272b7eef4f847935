"""Tests of the rafdb dataset plugin on a small RAF-DB layout written in tmp_path, broken rows included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nlbench import DataError
from nlbench.dataset import AFFECTNET_ORDER
from nlbench.plugins import get_registry

CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def write_face(path: Path, seed: int, size: tuple[int, int] = (100, 100)) -> None:
    """A small noisy RGB image (not flat, distinct per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_rafdb(root: Path, original: bool = False) -> Path:
    """RAF-DB basic with 7 good train rows, 3 good test rows and every kind of broken row."""
    lines = [f"train_{i:05d}.jpg {i}" for i in range(1, 8)]  # labels 1..7 -> classes 0..6
    lines += [f"test_{i:04d}.jpg {i}" for i in (1, 4, 7)]
    lines += [
        "train_00008.jpg 9",  # label out of range
        "train_00009.jpg 2",  # image missing
        "train_00010.jpg 3",  # corrupt JPEG
        "this line is malformed",
        "train_00001.jpg 5",  # listed twice
        "val_0001.jpg 3",  # unknown prefix
    ]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    folder = root / "Image" / ("original" if original else "aligned")
    stems = [f"train_{i:05d}" for i in range(1, 9)] + ["test_0001", "test_0004", "test_0007"]
    for i, name in enumerate(stems):
        write_face(folder / (f"{name}.jpg" if original else f"{name}_aligned.jpg"), i)
    corrupt = folder / ("train_00010.jpg" if original else "train_00010_aligned.jpg")
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


def rafdb(root: Path, **options):
    return get_registry().dataset("rafdb")(root, options)


def test_counts_labels_and_class_order(tmp_path: Path) -> None:
    ds = rafdb(make_rafdb(tmp_path))
    ds.check()
    assert ds.class_names == CLASSES and ds.num_classes == 7
    train, test = ds.table("train"), ds.table("test")
    # 7 good rows + the corrupt JPEG (its file exists: it fails at decoding, reported by prepare)
    assert len(train) == 8 and list(train.labels) == [0, 1, 2, 3, 4, 5, 6, 2]
    assert list(test.labels) == [0, 3, 6]
    assert train.refs[0].endswith("Image/aligned/train_00001_aligned.jpg")
    assert train.noisy_labels is None
    image = ds.read_image(train.refs[0])
    assert image.shape == (100, 100, 3) and image.dtype == np.uint8
    with pytest.raises(OSError):  # PIL: truncated or unidentified image
        ds.read_image(train.refs[-1])


def test_problems_are_precise(tmp_path: Path) -> None:
    ds = rafdb(make_rafdb(tmp_path))
    problems = "\n".join(ds.table("train").problems)
    assert "list_patition_label.txt line 11: label '9' of train_00008.jpg is not in 1..7" in problems
    assert f"image {tmp_path / 'Image/aligned/train_00009_aligned.jpg'} does not exist" in problems
    assert "line 14: expected '<name> <label>', got 'this line is malformed'" in problems
    assert "line 15: train_00001.jpg already listed on line 1" in problems
    assert "val_0001.jpg starts with neither train_ nor test_" in problems
    assert ds.table("test").problems == []


def test_declared_settings(tmp_path: Path) -> None:
    cls = get_registry().dataset("rafdb")
    assert cls.storage_size == 100 and cls.augmentation == "cct"
    assert cls.mean == (0.485, 0.456, 0.406) and cls.train_defaults == {"epochs": 100}
    assert tuple(AFFECTNET_ORDER[i] for i in cls.to_affectnet) == cls.class_names


def test_original_images(tmp_path: Path) -> None:
    ds = rafdb(make_rafdb(tmp_path, original=True), images="original")
    assert ds.storage_size == 224
    assert ds.table("train").refs[0].endswith("Image/original/train_00001.jpg")


def test_missing_layout_messages(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"EmoLabel.* does not exist.*--data-root must be the RAF-DB basic folder"):
        rafdb(tmp_path).check()
    (tmp_path / "EmoLabel").mkdir()
    with pytest.raises(DataError, match=r"list_patition_label.txt does not exist"):
        rafdb(tmp_path).check()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\n")
    with pytest.raises(DataError, match=r"Image/aligned does not exist: unpack Image/aligned.zip"):
        rafdb(tmp_path).check()
    with pytest.raises(DataError, match="is not a folder"):
        rafdb(tmp_path / "nowhere").check()


def test_basic_subfolder_is_found(tmp_path: Path) -> None:
    make_rafdb(tmp_path / "basic")
    assert len(rafdb(tmp_path).table("test")) == 3


def test_noisy_list_matched_by_name(tmp_path: Path) -> None:
    root = make_rafdb(tmp_path)
    # SCN style: absolute paths to the aligned images, 0-based labels, another order
    lines = [f"/home/someone/raf/train_{i:05d}_aligned.jpg {(i + 2) % 7}" for i in range(10, 0, -1)]
    (root / "noisy.txt").write_text("\n".join(lines) + "\n")
    ds = rafdb(root, noisy_list="noisy.txt", noisy_label_base=0)
    train = ds.table("train")
    names = [Path(r).name.replace("_aligned", "") for r in train.refs]
    assert list(train.noisy_labels) == [(int(n[6:11]) + 2) % 7 for n in names]
    incomplete = root / "short.txt"
    incomplete.write_text("train_00001.jpg 1\n")
    with pytest.raises(DataError, match=r"no noisy label for 7 of the 8 training images"):
        rafdb(root, noisy_list=str(incomplete)).table("train")


def test_landmarks_file_rows_follow_the_label_list_and_are_matched_by_name(tmp_path: Path) -> None:
    import torch

    from nlbench.options import identity_dict

    root = make_rafdb(tmp_path)
    # LA-Net's file: one row per train_ line of the list (00001-00007, 00009, 00010), pixels of 224 px
    points = torch.arange(9 * 19 * 2, dtype=torch.float32).view(9, 19, 2) / 10
    torch.save(points, root / "landmarks.tensor")
    plain = rafdb(root)
    assert plain.landmark_scheme is None and plain.read_landmarks("train") is None
    ds = rafdb(root, landmarks_file="landmarks.tensor")
    assert ds.landmark_scheme == "aflw19" and len(ds.landmark_version) == 16
    got = ds.read_landmarks("train")
    # the table keeps 00001-00007 and the corrupt 00010 (row 8); 00009 has no image
    assert got.shape == (8, 19, 2) and got.dtype == np.float32
    assert np.allclose(got[:7], points[:7].numpy() / 224) and np.allclose(got[7], points[8].numpy() / 224)
    assert ds.read_landmarks("test") is None
    assert identity_dict(ds.options) == identity_dict(plain.options)  # the path is not the identity
    torch.save(points[:5], root / "short.tensor")
    with pytest.raises(DataError, match=r"expected \(9, 19, 2\)"):
        rafdb(root, landmarks_file="short.tensor").read_landmarks("train")
    with pytest.raises(DataError, match="landmarks file .* does not exist"):
        rafdb(root, landmarks_file="missing.tensor").check()
