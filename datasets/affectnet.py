"""affectnet7 / affectnet8: AffectNet's expression categories (7 or 8 classes) from its distribution.

Files, under the data root:

* ``Manually_Annotated_file_lists/training.csv`` and ``validation.csv`` (header
  ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks, expression,
  valence, arousal``) with the images under ``Manually_Annotated_Images/<subDirectory_filePath>``.
  The official validation set (500 per class) is the test set, as in CCT.
* the automatically annotated subset, ``Automatically_Annotated_file_lists/automatically_annotated.csv``
  and ``Automatically_Annotated_Images/`` (same columns), used with ``train_list = "automatic"``.
  Folder names vary between copies: every name is an option.

Images are cropped to the face box (face_x, face_y, face_width, face_height, in pixels, clipped to
the image) unless ``cropped = true`` says the images are already face crops (CCT's own aligned copy,
say: point ``manual_images`` at it). Expressions: 0 neutral, 1 happiness, 2 sadness, 3 surprise, 4
fear, 5 disgust, 6 anger, 7 contempt (the AffectNet order is nlbench's common order); ``affectnet8``
keeps 0..7 and ``affectnet7`` 0..6, dropping 8 None, 9 Uncertain, 10 No-Face (and contempt), as
CCT. Expected sizes: train 287,651 / 283,901, test 4,000 / 3,500 (docs/methods.md §2.4).

Real noisy training labels (``train_list = "automatic"``): the automatic annotations have no clean
counterpart for the same images, so the training table holds the automatic labels both as
``labels`` and as ``noisy_labels``: ``--noise-source dataset`` trains on them with a realised
(measured) noise rate of 0, because their true error rate is unknown; ``--noise-source injected``
adds synthetic noise on top of them. Test accuracy is always on the manually annotated validation set.

Problems (expressions that are not integers 0..10, unusable face boxes, images listed twice, listed
images missing on disk) are reported in ``SampleTable.problems`` and those rows skipped.

Facial landmarks, for methods that train on them (LA-Net): the lists' ``facial_landmarks`` column
(68 iBUG points, ``x;y;...`` in pixels of the original image), moved into the face box and mapped
to the 19 AFLW points LA-Net's heatmap head predicts (:data:`IBUG68_TO_AFLW19`). They are read only
for such a run, and not with ``cropped = true``: the points lie in the original images, not in
someone's crops. A row whose points are missing or malformed trains without them (NaN: no landmark
target), and the run says how many.

Settings: 0.5/0.5 normalisation and the AffectNet augmentation (docs/methods.md §1.2); classifier lr
1e-3, class-balanced oversampling, 401 steps per epoch (the CCT code's iteration cap) and 30 epochs
(8 classes) / 25 (7 classes), as in CCT's AffectNet logs (§1.3, §1.4). Storage 112: faces are
stored at half the 224 network input, a standard face-crop size (ArcFace, MS-Celeb crops), which
keeps the 8-class training cache at 10.8 GB (287,651 x 3 x 112 x 112 bytes): within the 30% share
of an 80 GB GPU that the trainer keeps on the device, where 224 would need 43 GB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from PIL import Image

import nlbench
from nlbench import DataError, Dataset, SampleTable
from nlbench.dataset import AFFECTNET_ORDER, HALF_MEAN, HALF_STD

PATH_COLUMN = "subDirectory_filePath"
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
LABEL_COLUMN = "expression"
LANDMARK_COLUMN = "facial_landmarks"
#: Each AFLW-19 point (nlbench.landmarks.AFLW19 order) as the mean of these 0-based iBUG-68 points:
#: brow ends and middles, eye corners and the centre of each eye's six points, nostrils and nose tip,
#: mouth corners and the centre of the inner lips, chin. Image-left first, as in AFLW19.
IBUG68_TO_AFLW19: tuple[tuple[int, ...], ...] = (
    (17,), (19,), (21,), (22,), (24,), (26,),
    (36,), (36, 37, 38, 39, 40, 41), (39,), (42,), (42, 43, 44, 45, 46, 47), (45,),
    (31,), (30,), (35,),
    (48,), (62, 66), (54,),
    (8,),
)
#: Version of the 68 -> 19 map above: with the list's content it names the landmarks in a run's id.
LANDMARK_MAP_VERSION = "1"
NO_EXPRESSION = {8: "None", 9: "Uncertain", 10: "No-Face"}


@dataclass
class AffectnetOptions:
    """Which AffectNet lists and image folders to read."""

    #: "manual" (Manually_Annotated training.csv) or "automatic" (the automatically annotated list).
    train_list: Literal["manual", "automatic"] = "manual"
    #: Images are already face crops: do not crop them by the face box.
    cropped: bool = False
    #: Folder of training.csv and validation.csv, relative to the data root.
    manual_lists: str = "Manually_Annotated_file_lists"
    #: Folder of the manually annotated images, relative to the data root.
    manual_images: str = "Manually_Annotated_Images"
    #: The automatically annotated list, relative to the data root.
    automatic_list: str = "Automatically_Annotated_file_lists/automatically_annotated.csv"
    #: Folder of the automatically annotated images, relative to the data root.
    automatic_images: str = "Automatically_Annotated_Images"



class _AffectNet(Dataset):
    """AffectNet expression categories; subclasses fix how many classes are kept."""

    paper = "Mollahosseini, Hasani and Mahoor, IEEE TAC 2017 (AffectNet)"
    storage_size = 112
    mean = HALF_MEAN
    std = HALF_STD
    augmentation = "affectnet"
    Options = AffectnetOptions
    classes: ClassVar[int] = 8

    def __init__(self, root: Path | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(root, options)
        self._listings: dict[Path, set[str]] = {}

    def _sources(self, split: str) -> tuple[Path, Path]:
        """The list file and image folder of ``split``."""
        assert self.root is not None
        opts = self.options
        if split == "train" and opts.train_list == "automatic":
            return self.root / opts.automatic_list, self.root / opts.automatic_images
        name = "training.csv" if split == "train" else "validation.csv"
        return self.root / opts.manual_lists / name, self.root / opts.manual_images

    def check(self) -> None:
        """Check the list files and image folders of both splits exist."""
        super().check()
        for split in ("train", "test"):
            listing, images = self._sources(split)
            option = "automatic_list" if listing.name == "automatically_annotated.csv" else "manual_lists"
            if not listing.is_file():
                raise DataError(
                    f"{listing} does not exist: AffectNet ships it in its distribution (request access from its "
                    f"authors; nlbench never downloads data). Set datasets.{self.instance}.options.{option} if your copy "
                    f"names it differently."
                )
            if not images.is_dir():
                automatic = split == "train" and self.options.train_list == "automatic"
                option = "automatic_images" if automatic else "manual_images"
                raise DataError(
                    f"{images} does not exist: unpack the AffectNet images there, or set "
                    f"datasets.{self.instance}.options.{option} to the folder holding them."
                )

    def read_table(self, split: str) -> SampleTable:
        """The rows of ``split`` with a kept expression and an existing image."""
        self.check()
        listing, images = self._sources(split)
        try:
            frame = pd.read_csv(listing, dtype={PATH_COLUMN: str}, keep_default_na=False, low_memory=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {listing}: {err}") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        needed = [PATH_COLUMN, *BOX_COLUMNS, LABEL_COLUMN]
        absent = [c for c in needed if c not in frame.columns]
        if absent:
            raise DataError(
                f"{listing} lacks the column(s) {', '.join(absent)}; AffectNet lists have the header "
                f"{PATH_COLUMN},face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal."
            )
        problems: list[str] = []
        line = np.arange(len(frame)) + 2  # file line numbers (1 = header)
        expression = pd.to_numeric(frame[LABEL_COLUMN], errors="coerce")
        valid = expression.isin(range(11)).to_numpy()
        for i in np.flatnonzero(~valid):
            problems.append(f"{listing.name} line {line[i]}: expression {frame[LABEL_COLUMN].iloc[i]!r} is not "
                            f"an AffectNet expression id (0..10); skipped")
        labels = expression.fillna(-1).to_numpy(dtype=np.int64)
        keep = valid & (labels < self.classes)
        boxes = frame[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        if not self.options.cropped:
            usable = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
            for i in np.flatnonzero(keep & ~usable):
                problems.append(f"{listing.name} line {line[i]}: face box {tuple(frame[list(BOX_COLUMNS)].iloc[i])} "
                                f"is not a box with positive width and height; skipped")
            keep &= usable
        paths = frame[PATH_COLUMN].str.strip().to_numpy()
        refs: list[Any] = []
        kept_labels: list[int] = []
        first_line: dict[str, int] = {}
        for i in np.flatnonzero(keep):
            relative = paths[i].replace("\\", "/")
            if relative in first_line:
                problems.append(f"{listing.name} line {line[i]}: {relative} already listed on line "
                                f"{first_line[relative]}; skipped")
                continue
            first_line[relative] = int(line[i])
            if not self._exists(images, relative):
                problems.append(f"{listing.name} line {line[i]}: image {images / relative} does not exist; skipped")
                continue
            path = str(images / relative)
            if self.options.cropped:
                refs.append(path)
            else:
                refs.append((path, tuple(int(round(v)) for v in boxes[i])))
            kept_labels.append(int(labels[i]))
        label_array = np.asarray(kept_labels, dtype=np.int64)
        automatic = split == "train" and self.options.train_list == "automatic"
        # No clean labels exist for the automatic subset: the automatic labels are both (see docstring).
        return SampleTable(refs=refs, labels=label_array, noisy_labels=label_array.copy() if automatic else None,
                           problems=problems)

    @property
    def landmark_scheme(self) -> str | None:  # type: ignore[override]
        """aflw19 (mapped from the lists' 68 points), or none for images that are already crops."""
        return None if self.options.cropped else "aflw19"

    @property
    def landmark_version(self) -> str:  # type: ignore[override]
        """The map's version and the training list's content (its sha256), so edited points are another run."""
        from nlbench.identity import file_sha256

        return f"{LANDMARK_MAP_VERSION}-{file_sha256(self._sources('train')[0])[:12]}"

    def read_landmarks(self, split: str) -> np.ndarray | None:
        """The 19 AFLW points of every ``split`` face, as fractions of its face box (NaN where missing).

        The box is clipped to the image as :meth:`read_image` clips it, so each image's header is
        read (not its pixels).
        """
        if self.options.cropped:
            return None
        listing = self._sources(split)[0]
        try:
            frame = pd.read_csv(listing, dtype=str, keep_default_na=False, low_memory=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {listing}: {err}") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        if LANDMARK_COLUMN not in frame.columns:
            raise DataError(f"{listing} has no {LANDMARK_COLUMN} column, so its faces have no landmarks; run LA-Net's "
                            f"ablation without them with --set methods.lanet.landmarks=\"none\".")
        images = self._sources(split)[1]
        text: dict[str, str] = {}
        for relative, marks in zip(frame[PATH_COLUMN], frame[LANDMARK_COLUMN]):
            # The first row of an image listed twice, as read_table keeps it.
            text.setdefault(str(images / relative.strip().replace("\\", "/")), marks)
        refs = self.table(split).refs
        points = np.full((len(refs), len(IBUG68_TO_AFLW19), 2), np.nan, dtype=np.float32)
        for row, (path, box) in enumerate(refs):
            ibug = parse_ibug68(text.get(path, ""))
            if ibug is None:  # stays NaN: the run reports how many faces train without landmarks
                continue
            with Image.open(path) as image:  # the header only: the size the crop is clipped to
                width, height = image.size
            points[row] = ibug_to_box_fractions(ibug, box, width, height)
        return points

    def _exists(self, images: Path, relative: str) -> bool:
        """Whether ``images/relative`` exists, listing each subfolder once instead of one stat per file."""
        folder_part, _, name = relative.rpartition("/")
        folder = images / folder_part if folder_part else images
        if folder not in self._listings:
            try:
                self._listings[folder] = set(os.listdir(folder))
            except OSError:
                self._listings[folder] = set()
        return name in self._listings[folder]

    def read_image(self, ref: Any) -> np.ndarray:
        """One face: the image cropped to its face box (clipped to the image), or the image as is."""
        path, box = (ref, None) if isinstance(ref, str) else ref
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if box is None:
            return np.asarray(rgb)
        x, y, w, h = box
        left, top = max(0, x), max(0, y)
        right, bottom = min(rgb.width, x + w), min(rgb.height, y + h)
        if right <= left or bottom <= top:
            raise ValueError(f"face box {box} lies outside the {rgb.width}x{rgb.height} image")
        return np.asarray(rgb.crop((left, top, right, bottom)))


def parse_ibug68(text: str) -> np.ndarray | None:
    """68 (x, y) points from AffectNet's ``x;y;x;y;...`` text, or None when it is not 136 finite numbers."""
    try:
        values = np.asarray([float(v) for v in text.strip().split(";")], dtype=np.float64)
    except ValueError:
        return None
    if values.size != 136 or not np.isfinite(values).all():
        return None
    return values.reshape(68, 2)


def ibug_to_box_fractions(ibug: np.ndarray, box: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """The AFLW-19 points of one face (19 x 2 float32) as fractions of its face box clipped to the image."""
    x, y, w, h = box
    left, top = max(0, x), max(0, y)
    right, bottom = min(width, x + w), min(height, y + h)
    aflw = np.stack([ibug[list(group)].mean(axis=0) for group in IBUG68_TO_AFLW19])
    return ((aflw - (left, top)) / (right - left, bottom - top)).astype(np.float32)


class AffectNet8(_AffectNet):
    """AffectNet, 8 expressions (contempt included), as CCT's AffectNet-8."""

    name = "affectnet8"
    summary = "AffectNet, 8 expressions; Manually_Annotated_file_lists + Manually_Annotated_Images"
    class_names = AFFECTNET_ORDER
    classes = 8
    to_affectnet = tuple(range(8))
    train_defaults = {"classifier_lr": 1e-3, "balanced_sampling": True, "max_steps_per_epoch": 401, "epochs": 30}


class AffectNet7(_AffectNet):
    """AffectNet, 7 expressions (contempt dropped), as CCT's AffectNet-7."""

    name = "affectnet7"
    summary = "AffectNet, 7 expressions (no contempt); Manually_Annotated_file_lists + Manually_Annotated_Images"
    class_names = AFFECTNET_ORDER[:7]
    classes = 7
    to_affectnet = tuple(range(7))
    train_defaults = {"classifier_lr": 1e-3, "balanced_sampling": True, "max_steps_per_epoch": 401, "epochs": 25}


@nlbench.hookimpl
def register_datasets(register) -> None:
    register(AffectNet8)
    register(AffectNet7)
