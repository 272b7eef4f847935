"""The Dataset base class does what every file-reading plugin needs: tables read once, images from paths."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nlbench import Dataset, SampleTable


class Counted(Dataset):
    name = "counted"
    class_names = ("a", "b")
    needs_root = False

    def __init__(self) -> None:
        super().__init__(None, {})
        self.reads: list[str] = []

    def read_table(self, split: str) -> SampleTable:
        self.reads.append(split)
        return SampleTable(refs=[f"{split}.png"], labels=np.array([0]))


def test_a_split_is_read_once_and_an_unknown_split_is_refused() -> None:
    dataset = Counted()
    assert dataset.table("train") is dataset.table("train")
    dataset.table("test")
    assert dataset.reads == ["train", "test"]
    with pytest.raises(ValueError, match="unknown split 'val'; the splits are train, test"):
        dataset.table("val")


def test_the_default_read_image_reads_a_path_as_rgb(tmp_path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(gray).save(tmp_path / "face.png")
    image = Counted().read_image(tmp_path / "face.png")
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8 and np.array_equal(image[:, :, 1], gray)
