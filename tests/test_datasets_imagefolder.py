"""Tests of the imagefolder dataset plugin: class names from folders, given or drawn splits, formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from nlbench import DataError
from nlbench.errors import ConfigError
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


def write_subjects(root: Path, subjects: int = 10, per_class: int = 2, classes=("happy", "sad", "surprise")) -> None:
    """CK+-like file names, S<subject>_<sequence>_<frame>.png: every subject has frames of every class."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for s in range(1, subjects + 1):
            for frame in range(per_class):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / name / f"S{s:03d}_{classes.index(name) + 1:03d}_{frame:08d}.png")


def subjects_of(refs) -> set[str]:
    return {Path(ref).name.split("_")[0] for ref in refs}


def test_group_pattern_keeps_every_subject_in_one_split(tmp_path: Path) -> None:
    write_subjects(tmp_path)
    ds = imagefolder(tmp_path, group_pattern=r"(S\d+)_")
    train, test = ds.table("train"), ds.table("test")
    assert len(train) + len(test) == 60
    assert not subjects_of(train.refs) & subjects_of(test.refs)
    assert len(subjects_of(test.refs)) == 2  # round(10 subjects * 0.2), every image of each
    assert len(test) == 12 and sorted(np.bincount(test.labels).tolist()) == [4, 4, 4]
    assert imagefolder(tmp_path, group_pattern=r"(S\d+)_").table("test").refs == test.refs  # seeded
    drawn = {frozenset(subjects_of(imagefolder(tmp_path, group_pattern=r"(S\d+)_", split_seed=seed).table("test").refs))
             for seed in range(4)}
    assert len(drawn) > 1  # split_seed changes which subjects are tested
    whole_match = imagefolder(tmp_path, group_pattern=r"S\d+", split_seed=0).table("test")  # no group: the match
    assert whole_match.refs == test.refs


def test_folds_partition_the_images_and_stratify_the_classes(tmp_path: Path) -> None:
    for seed, (name, count) in enumerate({"angry": 7, "happy": 11, "sad": 5}.items()):
        write_images(tmp_path / name, count, seed)
    everything = set(imagefolder(tmp_path).table("train").refs) | set(imagefolder(tmp_path).table("test").refs)
    tested: list[str] = []
    for fold in range(1, 6):
        ds = imagefolder(tmp_path, folds=5, fold=fold, test_fraction=0.5)  # test_fraction is ignored
        train, test = ds.table("train"), ds.table("test")
        assert not set(train.refs) & set(test.refs) and set(train.refs) | set(test.refs) == everything
        assert len(test) in (4, 5)  # 23 images in 5 folds: sizes differ by at most 1
        assert np.bincount(test.labels, minlength=3).min() >= 1  # every class has 5 or more images
        tested += test.refs
    assert sorted(tested) == sorted(everything)  # each image is in exactly one fold's test set
    again = imagefolder(tmp_path, folds=5, fold=2).table("test").refs
    assert again == imagefolder(tmp_path, folds=5, fold=2).table("test").refs
    assert again != imagefolder(tmp_path, folds=5, fold=2, split_seed=1).table("test").refs


def test_folds_over_subjects(tmp_path: Path) -> None:
    write_subjects(tmp_path, subjects=7, per_class=1)
    tested: list[str] = []
    for fold in (1, 2, 3):
        ds = imagefolder(tmp_path, group_pattern=r"(S\d+)_", folds=3, fold=fold)
        train, test = ds.table("train"), ds.table("test")
        assert not subjects_of(train.refs) & subjects_of(test.refs)
        assert len(subjects_of(test.refs)) in (2, 3) and len(test) == 3 * len(subjects_of(test.refs))
        tested += test.refs
    assert len(tested) == len(set(tested)) == 21


@pytest.mark.parametrize(("options", "message"), [
    ({"group_pattern": "(S\\d+"}, r"group_pattern '\(S\\d\+' is not a valid regular expression"),
    ({"folds": 3, "fold": 4}, "fold 4 is more than folds 3"),
    ({"fold": 2}, "fold 2 is set but folds is 0"),
    ({"folds": 1}, "folds must be 0 .* or 2 to 100, got 1"),
    ({"folds": 101}, r"folds must be in \[0, 100\], got 101"),
])
def test_wrong_protocol_options_are_config_errors(tmp_path: Path, options, message) -> None:
    write_subjects(tmp_path, subjects=2, per_class=1)
    with pytest.raises(ConfigError, match=message):
        imagefolder(tmp_path, **options)


def test_protocol_data_errors(tmp_path: Path) -> None:
    write_subjects(tmp_path / "flat", subjects=4, per_class=1)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "flat" / "sad" / "frame.png")
    with pytest.raises(DataError, match=r"image sad/frame.png does not match .*group_pattern '\(S\\d\+\)_'"):
        imagefolder(tmp_path / "flat", group_pattern=r"(S\d+)_").table("train")
    (tmp_path / "flat" / "sad" / "frame.png").unlink()
    with pytest.raises(DataError, match="6 folds need at least 6 subjects, and the images name 4"):
        imagefolder(tmp_path / "flat", group_pattern=r"S\d+", folds=6).table("train")
    for split, subjects in (("train", 3), ("test", 2)):  # S001 and S002 in both
        write_subjects(tmp_path / "given" / split, subjects=subjects, per_class=1, classes=("happy", "sad"))
    with pytest.raises(DataError, match="subject 'S001' .*has images in both the train and the test split"):
        imagefolder(tmp_path / "given", group_pattern=r"(S\d+)_").table("train")
    assert len(imagefolder(tmp_path / "given").table("test")) == 4  # without groups: the given split
    with pytest.raises(DataError, match="folds = 2 draws the test set, but .* has train/ and test/ folders"):
        imagefolder(tmp_path / "given", folds=2).table("train")


def test_new_options_stay_out_of_the_identity_at_their_defaults(tmp_path: Path) -> None:
    write_subjects(tmp_path, subjects=2, per_class=1)
    assert set(imagefolder(tmp_path).identity()["options"]) == {"test_fraction", "split_seed", "size", "normalisation"}
    options = imagefolder(tmp_path, folds=2, fold=2, group_pattern="S").identity()["options"]
    assert (options["folds"], options["fold"], options["group_pattern"]) == (2, 2, "S")
    assert "fold" not in imagefolder(tmp_path, folds=2).identity()["options"]  # fold 1 is the default
