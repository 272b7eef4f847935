"""rafdb: RAF-DB basic (Real-world Affective Faces), 7 classes, from the layout of its distribution.

Files, under the data root (or its ``basic/`` or ``raf-basic/`` subfolder, as the archive unpacks):

* ``EmoLabel/list_patition_label.txt`` (sic): lines ``train_00001.jpg 5`` / ``test_0001.jpg 1``, labels
  1..7; the split is the name prefix (``train_``/``test_``). Option ``label_file`` reads another
  file of the same form (CCT's ``train_label.txt``/``test_label.txt`` concatenated, say).
* ``Image/aligned/<stem>_aligned.jpg`` (100x100 aligned faces, option ``images = "aligned"``, the
  default and what SCN and CCT use) or ``Image/original/<name>.jpg`` (whole photos, ``"original"``).

Classes keep RAF-DB's own order (label - 1): Surprise, Fear, Disgust, Happiness, Sadness, Anger,
Neutral, as SCN does; CCT remaps them to the AffectNet order, which :attr:`to_affectnet` records.
Expected sizes: train 12,271, test 3,068 (docs/methods.md §2.2).

Optional real noisy labels (option ``noisy_list``): a file of ``<name> <label>`` lines for the training
images, such as CCT's ``EmoLabel/0.4noise_train.txt`` (1-based, the default) or SCN's
``0.2noise_train.txt`` (absolute paths to ``*_aligned.jpg`` and 0-based labels: set
``noisy_label_base = 0``). Rows are matched **by image name** (a path's file name, ``_aligned``
removed), never by position; they become ``SampleTable.noisy_labels`` for ``--noise-source dataset``.

Problems (malformed lines, unknown prefixes, labels outside 1..7, names listed twice, listed images
missing on disk) are reported in ``SampleTable.problems`` and those rows skipped.

Settings: storage 100 (the aligned images' native size; 224 for whole photos, whose face is small),
ImageNet normalisation and the CCT RAF-DB/FERPlus augmentation (docs/methods.md §1.2), 100 epochs as in
CCT's RAF-DB log (§1.3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

import nlbench
from nlbench import DataError, Dataset, SampleTable
from nlbench.dataset import IMAGENET_MEAN, IMAGENET_STD
from nlbench.options import runtime

CLASS_NAMES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
PREFIXES = {"train": "train_", "test": "test_"}
IMAGE_KINDS = {"aligned": 100, "original": 224}  # storage size of each kind of image
LABEL_FILE = "EmoLabel/list_patition_label.txt"


@dataclass
class RafdbOptions:
    """Which RAF-DB images and label files to read."""

    #: "aligned" (Image/aligned/<stem>_aligned.jpg, 100x100) or "original" (Image/original/<name>.jpg).
    images: Literal["aligned", "original"] = "aligned"
    #: The label list, relative to the RAF-DB folder (or absolute).
    label_file: str = LABEL_FILE
    #: Optional noisy training labels ("<name> <label>" lines), relative to the RAF-DB folder or absolute.
    noisy_list: str = ""
    #: Label of the first class in noisy_list: 1 (RAF-DB/CCT files) or 0 (SCN's released files).
    noisy_label_base: Literal[0, 1] = 1
    #: Facial landmarks of the training images, for methods that train on them (LA-Net): LA-Net's
    #: ``raf_train_19_landmarks.tensor`` (19 AFLW points per image, pixels of the 224 px aligned
    #: image, rows in the order of the label list's train_ lines), relative to the RAF-DB folder or
    #: absolute. Its content (sha256) enters the id of the runs that use it, not its path.
    landmarks_file: str = runtime("")


class Rafdb(Dataset):
    """RAF-DB basic expressions (7 classes, RAF-DB order), aligned or original images."""

    name = "rafdb"
    summary = "RAF-DB basic, 7 classes; EmoLabel/list_patition_label.txt + Image/aligned"
    paper = "Li, Deng and Du, CVPR 2017 (RAF-DB)"
    class_names = CLASS_NAMES
    list_label_base = 1  # list_patition_label.txt and CCT's noise lists count from 1
    storage_size = IMAGE_KINDS["aligned"]
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    augmentation = "cct"
    train_defaults = {"epochs": 100}
    # surprise, fear, disgust, happiness, sadness, anger, neutral -> AffectNet order (CCT's remap, docs/methods.md §2.1)
    to_affectnet = (3, 4, 5, 1, 2, 6, 0)
    Options = RafdbOptions

    def __init__(self, root: Path | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(root, options)
        self.storage_size = IMAGE_KINDS[self.options.images]
        self._entries: list[tuple[str, str, int, str]] | None = None  # (split, name, label, where)
        self._problems: list[tuple[str, str]] = []

    def base(self) -> Path:
        """The RAF-DB folder: the data root, or its basic/ or raf-basic/ subfolder holding EmoLabel/."""
        super().check()
        assert self.root is not None
        candidates = [self.root, self.root / "basic", self.root / "raf-basic"]
        for folder in candidates:
            if (folder / "EmoLabel").is_dir():
                return folder
        raise DataError(
            f"{self.root / 'EmoLabel'} does not exist: --data-root must be the RAF-DB basic folder holding "
            f"EmoLabel/ and Image/ (also looked in {candidates[1]} and {candidates[2]}). RAF-DB is available "
            f"from its authors on request (whdeng.cn/RAF); nlbench never downloads data."
        )

    def image_folder(self) -> Path:
        """Where the images of the chosen kind are."""
        return self.base() / "Image" / self.options.images

    def _resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base() / path

    def check(self) -> None:
        """Check the label list and the image folder exist."""
        labels = self._resolve(self.options.label_file)
        if not labels.is_file():
            raise DataError(
                f"{labels} does not exist: RAF-DB basic ships it as EmoLabel/list_patition_label.txt "
                f"(lines like 'train_00001.jpg 5'); set datasets.rafdb.options.label_file for another list."
            )
        folder = self.image_folder()
        if not folder.is_dir():
            archive = f"Image/{self.options.images}.zip"
            raise DataError(
                f"{folder} does not exist: unpack {archive} of the RAF-DB basic distribution there"
                + (" (or set datasets.rafdb.options.images = \"original\")." if self.options.images == "aligned"
                   else " (or use the default images = \"aligned\").")
            )
        if self.options.noisy_list and not self._resolve(self.options.noisy_list).is_file():
            raise DataError(f"noisy label list {self._resolve(self.options.noisy_list)} does not exist.")
        if self.options.landmarks_file and not self._resolve(self.options.landmarks_file).is_file():
            raise DataError(f"landmarks file {self._resolve(self.options.landmarks_file)} does not exist "
                            f"(datasets.rafdb.options.landmarks_file).")

    @property
    def landmark_scheme(self) -> str | None:  # type: ignore[override]
        """aflw19 with a landmarks file, else none."""
        return "aflw19" if self.options.landmarks_file else None

    @property
    def landmark_version(self) -> str:  # type: ignore[override]
        """The landmarks file's content: its sha256 (16 hex digits), so another file is another run."""
        from nlbench.identity import file_sha256

        return file_sha256(self._resolve(self.options.landmarks_file))[:16]

    def read_landmarks(self, split: str) -> np.ndarray | None:
        """The training images' 19 points from the landmarks file, as fractions of the image side."""
        if split != "train" or not self.options.landmarks_file:
            return None
        from nlbench.safe_load import load_tensors

        path = self._resolve(self.options.landmarks_file)
        try:
            points = load_tensors(path)
        except Exception as err:  # a damaged or foreign file: one clear message
            raise DataError(f"landmarks file {path} could not be read as a tensor file ({err}).") from None
        listed = [name for entry_split, name, _, _ in self._read_entries() if entry_split == "train"]
        if not hasattr(points, "shape") or tuple(points.shape) != (len(listed), 19, 2):
            shape = tuple(points.shape) if hasattr(points, "shape") else type(points).__name__
            raise DataError(f"landmarks file {path} holds {shape}; expected ({len(listed)}, 19, 2): one row of 19 "
                            f"(x, y) points per train_ line of {self.options.label_file}, in its order.")
        row = {self._image_name(name): number for number, name in enumerate(listed)}  # by image file name
        rows = [row[Path(ref).name] for ref in self.table("train").refs]
        return (np.asarray(points, dtype=np.float32)[rows] / 224.0).astype(np.float32)

    def _read_entries(self) -> list[tuple[str, str, int, str]]:
        if self._entries is not None:
            return self._entries
        self.check()
        path = self._resolve(self.options.label_file)
        entries: list[tuple[str, str, int, str]] = []
        seen: dict[str, int] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            fields = line.split()
            split = next((s for s, p in PREFIXES.items() if fields[0].startswith(p)), "")
            if len(fields) != 2:
                message = f"{where}: expected '<name> <label>', got {line.strip()!r}; skipped"
                self._problems.append((split or "train", message))
                continue
            name, text = fields
            if not split:
                self._problems.append(("train", f"{where}: {name} starts with neither train_ nor test_; skipped"))
                continue
            if not text.isdigit() or not 1 <= int(text) <= len(CLASS_NAMES):
                self._problems.append((split, f"{where}: label {text!r} of {name} is not in 1..7; skipped"))
                continue
            if name in seen:
                self._problems.append((split, f"{where}: {name} already listed on line {seen[name]}; skipped"))
                continue
            seen[name] = number
            entries.append((split, name, int(text) - 1, where))
        self._entries = entries
        return entries

    def _image_name(self, name: str) -> str:
        if self.options.images == "aligned":
            stem, _, _ = name.rpartition(".")
            return f"{stem or name}_aligned.jpg"
        return name

    def read_table(self, split: str) -> SampleTable:
        """The rows of ``split`` whose image exists, labels in RAF-DB order (0 = surprise)."""
        entries = self._read_entries()
        folder = self.image_folder()
        present = set(os.listdir(folder))
        refs, labels, names = [], [], []
        problems = [message for where, message in self._problems if where == split]
        for entry_split, name, label, where in entries:
            if entry_split != split:
                continue
            image = self._image_name(name)
            if image not in present:
                problems.append(f"{where}: image {folder / image} does not exist; skipped")
                continue
            refs.append(str(folder / image))
            labels.append(label)
            names.append(name)
        noisy = self._noisy_labels(names, problems) if split == "train" and self.options.noisy_list else None
        return SampleTable(refs=refs, labels=np.asarray(labels, dtype=np.int64), noisy_labels=noisy, problems=problems)

    def _noisy_labels(self, names: list[str], problems: list[str]) -> np.ndarray:
        """The noisy label of each training image, matched by image name."""
        path = self._resolve(self.options.noisy_list)
        base = self.options.noisy_label_base
        given: dict[str, int] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            stem, dot, ext = Path(fields[0]).name.rpartition(".")
            key = (stem.removesuffix("_aligned") + dot + ext) if dot else fields[0]
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                problems.append(f"{path.name} line {number}: expected '<name> <label>', got {line.strip()!r}; skipped")
                continue
            label = int(fields[1]) - base
            if not 0 <= label < len(CLASS_NAMES):
                problems.append(f"{path.name} line {number}: label {fields[1]} is outside "
                                f"{base}..{base + len(CLASS_NAMES) - 1} (noisy_label_base = {base}); skipped")
                continue
            given[key] = label
        missing = [n for n in names if n not in given]
        if missing:
            raise DataError(
                f"{path} has no noisy label for {len(missing)} of the {len(names)} training images "
                f"(first: {', '.join(missing[:3])}); it must list every training image by name."
            )
        return np.asarray([given[n] for n in names], dtype=np.int64)

@nlbench.hookimpl
def register_datasets(register) -> None:
    register(Rafdb)
