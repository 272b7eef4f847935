"""Tests of the imagefolder dataset plugin: class names from folders, given or drawn splits, formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from nlbench import DataError
from nlbench.plugins import get_registry

FORMATS = ["png", "jpg", "JPEG", "bmp", "tif"] + (["webp"] if features.check("webp") else [])


def write_images(folder: Path, count: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.{FORMATS[i % len(FORMATS)]}")


def imagefolder(root: Path, **options):
    return get_registry().dataset("imagefolder")(root, options)


def test_drawn_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    for seed, (name, count) in enumerate({"sad": 10, "happy": 5, "angry": 1}.items()):
        write_images(tmp_path / name, count, seed)
    (tmp_path / "happy" / "notes.txt").write_text("not an image")
    ds = imagefolder(tmp_path)
    ds.check()
    assert ds.class_names == ("angry", "happy", "sad") and ds.num_classes == 3
    assert ds.to_affectnet == (6, 1, 2)
    train, test = ds.table("train"), ds.table("test")
    assert list(np.bincount(test.labels, minlength=3)) == [0, 1, 2]  # round(n * 0.2), at least 1 when n >= 2
    assert list(np.bincount(train.labels, minlength=3)) == [1, 4, 8]
    assert not set(train.refs) & set(test.refs)
    assert any("1 file(s) that are not images" in p and "notes.txt" in p for p in train.problems)
    again = imagefolder(tmp_path).table("test")
    assert again.refs == test.refs
    other = imagefolder(tmp_path, split_seed=5, test_fraction=0.5).table("test")
    assert list(np.bincount(other.labels, minlength=3)) == [0, 2, 5] and other.refs != test.refs
    image = ds.read_image(train.refs[0])
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8


def test_given_train_and_test_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "Neutral", 3)
    write_images(tmp_path / "train" / "Surprised" / "nested", 2)
    write_images(tmp_path / "test" / "Neutral", 1)
    write_images(tmp_path / "test" / "bored", 2)
    ds = imagefolder(tmp_path, size=64, normalisation="half")
    assert ds.class_names == ("Neutral", "Surprised") and ds.to_affectnet == (0, 3)
    assert ds.storage_size == 64 and ds.mean == (0.5, 0.5, 0.5)
    assert list(ds.table("train").labels) == [0, 0, 0, 1, 1] and list(ds.table("test").labels) == [0]
    assert ds.table("test").problems == [
        f"{tmp_path / 'test' / 'bored'}: class 'bored' is not a folder of {tmp_path / 'train'}; its 2 image(s) skipped"
    ]


def test_unknown_class_names_have_no_affectnet_mapping(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", 2)
    write_images(tmp_path / "dogs", 2)
    assert imagefolder(tmp_path).to_affectnet is None


def test_needs_two_class_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "only", 3)
    with pytest.raises(DataError, match=r"must hold one folder per class \(at least 2; found only 'only'\)"):
        imagefolder(tmp_path).check()
    with pytest.raises(DataError, match="is not a folder"):
        imagefolder(tmp_path / "missing").check()


def test_class_attribute_is_a_placeholder() -> None:
    cls = get_registry().dataset("imagefolder")
    assert cls.class_names == () and cls.needs_root
