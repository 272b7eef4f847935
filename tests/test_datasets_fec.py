"""Tests of the fec dataset plugin on annotation files in the published (shifted-header) form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nlbench import DataError
from nlbench.dataset import AFFECTNET_ORDER
from nlbench.plugins import get_registry

# The header as CCT publishes it: two names too many before the box, so rows are read by position.
HEADER = ("Slno,Image_name,url,x,y,Top_left_column,Bottom_right_column,Top_left_row,Bottom_right_row,"
          "Gender,AgeGroup,Expression")
BOX = (0.2, 0.6, 0.1, 0.5)  # left, right, top, bottom, normalised
FACE = (20, 220, 40)


def write_photo(path: Path, seed: int) -> None:
    """A 100x50 photo with a solid face where BOX says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    pixels[5:25, 20:60] = FACE
    Image.fromarray(pixels).save(path, format="PNG")


def row(n: int, name: str, expression: int | str, box=BOX, repeat: bool = True) -> str:
    url = f"http://farm1.staticflickr.com/1/{name.split('_', 1)[1]}"
    tail = f",1,3,{expression},3,{expression}" if repeat else f",1,3,{expression}"
    return f"{n},{name},{url},{','.join(map(str, box))}" + tail


def make_fec(root: Path) -> Path:
    lines = [HEADER,
             row(1, "0_111_a_b.jpg", 3),
             row(2, "4_111_a_b.jpg", 1),  # second face of the same photo, found under the url's name
             row(3, "0_222_c_b.jpg", 0),
             row(4, "0_333_d_b.jpg", 5),  # photo missing
             row(5, "0_444_e_b.jpg", 7),  # expression out of range
             row(6, "0_555_f_b.jpg", 6, box=(0.7, 0.2, 0.1, 0.5)),  # left > right
             row(7, "0_666_g_b.jpg", 2).rsplit(",", 1)[0] + ",4",  # repeated expression disagrees
             "8,0_777_h_b.jpg,http://x/777_h_b.jpg,0.1"]  # short row
    (root / "FEC_test_annoated_meta_data.csv").write_text("\n".join(lines) + "\n")
    photos = ("0_111_a_b.jpg", "111_a_b.jpg", "0_222_c_b.jpg", "0_555_f_b.jpg", "0_666_g_b.jpg")
    for i, name in enumerate(photos):
        write_photo(root / "images" / name, i)
    # a training list without header, 10 columns, photos in their own folder
    train = [row(i, f"0_9{i}_t_b.jpg", i % 7, repeat=False) for i in range(1, 6)]
    (root / "train.csv").write_text("\n".join(train) + "\n")
    for i in range(1, 6):
        write_photo(root / "train_photos" / f"0_9{i}_t_b.jpg", 10 + i)
    return root


def fec(root: Path, **options):
    return get_registry().dataset("fec")(root, options)


def test_test_annotations_read_by_position(tmp_path: Path) -> None:
    root = make_fec(tmp_path)
    ds = fec(root)
    ds.check()
    assert ds.class_names == AFFECTNET_ORDER[:7] and ds.to_affectnet == tuple(range(7))
    test = ds.table("test")
    assert list(test.labels) == [3, 1, 0, 2] and test.noisy_labels is None
    assert test.refs[1] == (str(root / "images" / "111_a_b.jpg"), BOX)
    problems = "\n".join(test.problems)
    missing = root / "images/0_333_d_b.jpg"
    assert f"line 5: photo {missing} not found (nor under the url's file name 333_d_b.jpg)" in problems
    assert "line 6: expression '7' is not in 0..6; skipped" in problems
    assert "line 7: face box ('0.7', '0.2', '0.1', '0.5') is not left < right" in problems
    assert "line 8: expression columns disagree (2 in column 10, 4 in column 12); column 10 used" in problems
    assert "line 9: 4 columns, expected at least 10" in problems


def test_crop_by_normalised_box(tmp_path: Path) -> None:
    ds = fec(make_fec(tmp_path))
    face = ds.read_image(ds.table("test").refs[0])
    assert face.shape == (20, 40, 3) and (face == FACE).all()  # rows 0.1..0.5 of 50, columns 0.2..0.6 of 100
    cropped = fec(tmp_path, cropped=True)
    assert cropped.read_image(cropped.table("test").refs[0]).shape == (50, 100, 3)


def test_training_list_labels_are_noisy(tmp_path: Path) -> None:
    root = make_fec(tmp_path)
    with pytest.raises(DataError, match=r"FEC has no official training set.*datasets.fec.options.train_list"):
        fec(root).table("train")
    ds = fec(root, train_list="train.csv", train_images="train_photos")
    train = ds.table("train")
    assert list(train.labels) == [1, 2, 3, 4, 5] and list(train.noisy_labels) == [1, 2, 3, 4, 5]
    assert train.problems == []


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"FEC_test_annoated_meta_data.csv does not exist.*test_list"):
        fec(tmp_path).check()
    root = make_fec(tmp_path)
    with pytest.raises(DataError, match=r"photos does not exist: download the photos.*train_images"):
        fec(root, train_list="train.csv", train_images="photos").check()
