"""fec: faces of Google's FEC test set with CCT's expression labels (7 classes, AffectNet order).

Files, under the data root:

* the test annotations (option ``test_list``, default CCT's ``FEC_test_annoated_meta_data.csv``,
  spelling as published in CCT's ``FECdataset/``): one row per face, about 4.7K rows;
* a training list in the same form (option ``train_list``; FEC has no official one: CCT trained on
  FEC faces labelled by an SCN model, so these labels are treated as noisy);
* the photos the user downloaded from the ``url`` column (option ``images``, and ``train_images``
  when the training photos are elsewhere), saved as ``Image_name`` or under the URL's file name.
  nlbench never downloads them.

Column convention (an assumption, checked against the published CSV). docs/methods.md §2.5 only says
"Slno, Image_name, url, face box coordinates, Gender, AgeGroup, Expression". The published file's
header reads ``Slno,Image_name,url,x,y,Top_left_column,Bottom_right_column,Top_left_row,
Bottom_right_row,Gender,AgeGroup,Expression`` but its rows hold, by position: Slno, Image_name, url,
four box values, then Gender, AgeGroup, Expression, then AgeGroup and Expression again (the header
is shifted by its two ``x,y`` names). The four box values follow the FEC dataset's own convention:
top-left column, bottom-right column, top-left row, bottom-right row, each **normalised** to [0, 1]
by the image width (columns) or height (rows): left, right, top, bottom. Columns are therefore read
by position, never by header name: index 1 image name, 2 url, 3..6 the box (left, right, top,
bottom), 9 the expression (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger);
where an 11th/12th column repeats the expression and disagrees, the row is reported. A file without
a header row is read the same way. Faces are cropped to the box (no margin) unless ``cropped =
true`` says the saved images are already face crops.

Labels: test rows hold CCT's annotations (``labels``); training rows hold the SCN-annotated labels,
which have no clean counterpart, so they are both ``labels`` and ``noisy_labels`` (``--noise-source
dataset`` trains on them with a measured noise rate of 0; their true error rate is unknown).

Problems (short rows, expressions outside 0..6, unusable boxes, images not found) are reported in
``SampleTable.problems`` and those rows skipped.

Settings: storage 112 (in-the-wild faces of any size, as AffectNet), ImageNet normalisation as CCT's
``main_fec.py``; the shared CCT augmentation (docs/methods.md Part A: CCT's FEC script used only the
flip/noise part); classifier lr 1e-3 and 25 epochs, the defaults of ``main_fec.py``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import nlbench
from nlbench import DataError, Dataset, SampleTable
from nlbench.dataset import AFFECTNET_ORDER, IMAGENET_MEAN, IMAGENET_STD

NAME, URL, BOX, EXPRESSION = 1, 2, slice(3, 7), 9
REPEATED_EXPRESSION = 11


@dataclass
class FecOptions:
    """Which FEC lists and photo folders to read."""

    #: Test annotations (CCT's re-annotation), relative to the data root or absolute.
    test_list: str = "FEC_test_annoated_meta_data.csv"
    #: Training list in the same form (labels treated as noisy); "" = none (training is then impossible).
    train_list: str = ""
    #: Folder of the downloaded photos, relative to the data root or absolute.
    images: str = "images"
    #: Folder of the training photos; "" = the same as images.
    train_images: str = ""
    #: The saved images are already face crops: do not crop them by the box.
    cropped: bool = False


class Fec(Dataset):
    """FEC faces with 7 expression labels in AffectNet order (CCT's FEC experiment)."""

    name = "fec"
    summary = "Google FEC faces, 7 expressions (CCT labels); annotation CSV + downloaded photos"
    paper = "Vemulapalli and Agarwala, CVPR 2019 (FEC); labels: Gera and Balasubramanian (CCT)"
    class_names = AFFECTNET_ORDER[:7]
    storage_size = 112
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    augmentation = "cct"
    train_defaults = {"classifier_lr": 1e-3, "epochs": 25}
    to_affectnet = tuple(range(7))
    Options = FecOptions

    def __init__(self, root: Path | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(root, options)
        self._listings: dict[Path, set[str]] = {}

    def _path(self, name: str) -> Path:
        assert self.root is not None
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.root / path

    def _sources(self, split: str) -> tuple[Path, Path]:
        opts = self.options
        if split == "train":
            if not opts.train_list:
                raise DataError(
                    "FEC has no official training set: give a training list in the same form as the test "
                    "annotations with --set datasets.fec.options.train_list=FILE (CCT used SCN-annotated FEC faces)."
                )
            return self._path(opts.train_list), self._path(opts.train_images or opts.images)
        return self._path(opts.test_list), self._path(opts.images)

    def check(self) -> None:
        """Check the annotation files and photo folders that are configured exist."""
        super().check()
        splits = ("train", "test") if self.options.train_list else ("test",)
        for split in splits:
            listing, images = self._sources(split)
            if not listing.is_file():
                option = "train_list" if split == "train" else "test_list"
                raise DataError(
                    f"{listing} does not exist: put the FEC annotation CSV there (CCT publishes the test one as "
                    f"FECdataset/FEC_test_annoated_meta_data.csv) or set datasets.fec.options.{option}."
                )
            if not images.is_dir():
                option = "train_images" if split == "train" and self.options.train_images else "images"
                raise DataError(
                    f"{images} does not exist: download the photos of the url column there (nlbench never "
                    f"downloads data), or set datasets.fec.options.{option} to their folder."
                )

    def read_table(self, split: str) -> SampleTable:
        """The rows of ``split`` with an expression 0..6, a usable box and a photo on disk."""
        super().check()
        listing, images = self._sources(split)
        for path, kind in ((listing, "annotation file"), (images, "photo folder")):
            if not path.exists():
                raise DataError(f"FEC {kind} {path} does not exist.")
        with open(listing, newline="", encoding="utf-8", errors="replace") as handle:
            numbered = [(n, row) for n, row in enumerate(csv.reader(handle), start=1) if row]
        if numbered and not numbered[0][1][0].strip().isdigit():
            numbered = numbered[1:]  # the header row (its names are not used: see the module docstring)
        problems: list[str] = []
        refs: list[Any] = []
        labels: list[int] = []
        for number, row in numbered:
            where = f"{listing.name} line {number}"
            if len(row) <= EXPRESSION:
                problems.append(f"{where}: {len(row)} columns, expected at least 10 (Slno, Image_name, url, 4 box "
                                f"values, Gender, AgeGroup, Expression); skipped")
                continue
            text = row[EXPRESSION].strip()
            if not text.isdigit() or int(text) >= len(self.class_names):
                problems.append(f"{where}: expression {text!r} is not in 0..6; skipped")
                continue
            if len(row) > REPEATED_EXPRESSION and row[REPEATED_EXPRESSION].strip() != text:
                problems.append(f"{where}: expression columns disagree ({text} in column 10, "
                                f"{row[REPEATED_EXPRESSION].strip()} in column 12); column 10 used")
            found = self._find(images, row[NAME].strip(), row[URL].strip())
            if found is None:
                problems.append(f"{where}: photo {images / row[NAME].strip()} not found (nor under the url's file "
                                f"name {row[URL].strip().rsplit('/', 1)[-1]}); skipped")
                continue
            if self.options.cropped:
                refs.append(found)
            else:
                box = _box(row[BOX])
                if box is None:
                    problems.append(f"{where}: face box {tuple(row[BOX])} is not left < right, top < bottom "
                                    f"in [0, 1]; skipped")
                    continue
                refs.append((found, box))
            labels.append(int(text))
        array = np.asarray(labels, dtype=np.int64)
        noisy = array.copy() if split == "train" else None  # SCN-annotated: no clean labels exist
        return SampleTable(refs=refs, labels=array, noisy_labels=noisy, problems=problems)

    def _find(self, images: Path, name: str, url: str) -> str | None:
        """The photo of a row: saved as Image_name, else under the url's file name."""
        if images not in self._listings:
            self._listings[images] = set(os.listdir(images))
        present = self._listings[images]
        for candidate in (name, url.rsplit("/", 1)[-1]):
            if candidate and candidate in present:
                return str(images / candidate)
        return None

    def read_image(self, ref: Any) -> np.ndarray:
        """One face: the photo cropped to its normalised box, or the saved crop as is."""
        path, box = (ref, None) if isinstance(ref, str) else ref
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if box is None:
            return np.asarray(rgb)
        left, right, top, bottom = box
        crop = (math.floor(left * rgb.width), math.floor(top * rgb.height),
                math.ceil(right * rgb.width), math.ceil(bottom * rgb.height))
        if crop[2] - crop[0] < 1 or crop[3] - crop[1] < 1:
            raise ValueError(f"face box {box} is empty in the {rgb.width}x{rgb.height} photo")
        return np.asarray(rgb.crop(crop))


def _box(values: list[str]) -> tuple[float, float, float, float] | None:
    """(left, right, top, bottom) in [0, 1], clipped; None when not a box."""
    try:
        raw = [float(v) for v in values]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in raw):
        return None
    left, right, top, bottom = (min(1.0, max(0.0, v)) for v in raw)
    if not (left < right and top < bottom):
        return None
    return left, right, top, bottom


@nlbench.hookimpl
def register_datasets(register) -> None:
    register(Fec)
