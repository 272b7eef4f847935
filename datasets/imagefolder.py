"""imagefolder: a user's own FER data, one folder per class, without writing a plugin.

Layouts, under the data root:

* ``train/<class>/...`` and ``test/<class>/...``: the given split; classes are the folders of
  ``train/`` (a ``test/`` class missing from ``train/`` is reported and its images skipped);
* ``<class>/...``: every class folder is split into train and test by a seeded, stratified draw
  (options ``test_fraction`` = 0.2 and ``split_seed`` = 0): in each class, ``round(n *
  test_fraction)`` images, at least 1 and at most n - 1 when the class has 2 or more images, go to
  the test set. Each class's draw depends only on its name, its sorted file names and the seed.

Subject-independent splits: option ``group_pattern`` (default ``""``, none) is a Python regular
expression searched (``re.search``) in each image's path relative to the data root, e.g.
``'(S\\d+)_'`` for CK+ file names such as ``happy/S005_001_00000011.png``; its first group (or the
whole match, when it has no group) is the image's subject. An image it does not match is an error.
Without ``train/`` and ``test/`` folders, the seeded draw is then over subjects, not images: the
subjects sorted by id, a seeded permutation (``split_seed``), the first ``round(n_subjects *
test_fraction)``, at least 1 and at most n_subjects - 1, go to the test set with all their
images. It cannot be stratified by class (a subject's images go together, whatever their
classes). With ``train/`` and ``test/`` folders, a subject with images in both is an error.

k-fold cross-validation (the usual protocol of CK+, JAFFE and Oulu-CASIA): option ``folds`` (default
0, off; else 2 to 100) splits the images into that many seeded parts, and option ``fold`` (default
1, from 1 to folds) names the part that is the test set, the others training. Without groups the
folds are stratified: per class (in label order), its images sorted by path are put in a seeded
order (``split_seed``) and dealt round-robin into the folds, the deal going on from one class to the
next, so fold sizes differ by at most 1 and each fold holds every class that has ``folds`` images or
more. With ``group_pattern`` the subjects, sorted and seeded, are dealt instead. Each image is in
the test set of exactly one fold. ``test_fraction`` is ignored when ``folds`` > 0, and ``folds``
with ``train/`` and ``test/`` folders is an error. Options added later (``group_pattern``,
``folds``, ``fold``) enter the run id only when set, so runs stored before them keep their ids.

Class names are the folder names, sorted, so the class order (and the label indices) is the same
on every machine. Images: jpg, jpeg, png, bmp, webp, tif, tiff (any case), searched recursively in
each class folder; hidden files are ignored, other files are reported. Because the classes depend on
the data root, ``class_names`` is set per instance (the class attribute is an empty placeholder).

``to_affectnet`` is filled in when every class name is one of the AffectNet expressions or a usual
synonym (happy, sad, angry, surprised, fearful, disgusted, ...), each once; otherwise it is None
and cross-dataset reports and pair noise cannot use it.

Settings: storage size (option ``size``, default 112), normalisation (option ``normalisation``:
``imagenet`` or ``half`` for 0.5/0.5), the shared CCT augmentation (``--set
train.augmentation=...`` changes it), no other training defaults.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

import nlbench
from nlbench import DataError, Dataset, SampleTable
from nlbench.dataset import (
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    affectnet_mapping,
    check_protocol_options,
    check_subjects_apart,
    compile_group_pattern,
    draw_test_set,
    subject_of,
)
from nlbench.options import Range, added

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
NORMALISATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": (HALF_MEAN, HALF_STD)}
@dataclass
class ImagefolderOptions:
    """How to split, store and normalise a folder-per-class dataset."""

    #: Share of each class (or of the subjects, with group_pattern) drawn into the test set when
    #: there are no train/ and test/ folders; ignored when folds > 0.
    test_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.2
    #: Seed of that draw, and of the folds.
    split_seed: int = 0
    #: Side of the stored square images.
    size: Annotated[int, Range(16, 512)] = 112
    #: "imagenet" (mean 0.485/0.456/0.406, std 0.229/0.224/0.225) or "half" (0.5/0.5).
    normalisation: Literal["imagenet", "half"] = "imagenet"
    #: Regular expression finding the subject in each image's path relative to the data root (its
    #: first group, or the whole match), e.g. '(S\d+)_': no subject in both train and test ("" = none).
    group_pattern: str = added("")
    #: k-fold cross-validation: the number of folds (0 = off, else 2 to 100); needs one set of class folders.
    folds: Annotated[int, Range(0, 100)] = added(0)
    #: The fold (1 to folds) whose images form the test set; the other folds train.
    fold: Annotated[int, Range(1, 100)] = added(1)

    def __post_init__(self) -> None:
        check_protocol_options(self.group_pattern, self.folds, self.fold)


class ImageFolder(Dataset):
    """Images sorted into one folder per class, with or without train/ and test/ folders."""

    name = "imagefolder"
    summary = "your own images, one folder per class (optional train/ and test/ folders)"
    paper = "-"
    class_names = ()  # per data root: set on the instance from the folder names
    augmentation = "cct"
    Options = ImagefolderOptions

    def __init__(self, root: Path | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(root, options)
        self.storage_size = self.options.size
        self.mean, self.std = NORMALISATIONS[self.options.normalisation]
        if self.root is not None and self.root.is_dir():
            self.class_names = tuple(self._class_folders(self._train_root()))
            self.to_affectnet = affectnet_mapping(self.class_names)

    def _train_root(self) -> Path:
        assert self.root is not None
        return self.root / "train" if self._has_splits() else self.root

    def _has_splits(self) -> bool:
        assert self.root is not None
        return (self.root / "train").is_dir() and (self.root / "test").is_dir()

    @staticmethod
    def _class_folders(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def check(self) -> None:
        """Check there are class folders, at least two of them."""
        super().check()
        assert self.root is not None
        where = self._train_root()
        if len(self.class_names) < 2:
            found = f"only {self.class_names[0]!r}" if self.class_names else "none"
            raise DataError(
                f"{where} must hold one folder per class (at least 2; found {found}), e.g. {where}/happy/001.jpg, "
                f"optionally under train/ and test/ folders."
            )

    def read_table(self, split: str) -> SampleTable:
        """The images of ``split`` with their class indices (sorted folder names)."""
        return self._both[split]

    @functools.cached_property
    def _both(self) -> dict[str, SampleTable]:
        """Both splits, listed together (a drawn test split needs every image of each class)."""
        self.check()
        tables = self._split_tables() if self._has_splits() else self._drawn_tables()
        counts = np.bincount(tables["train"].labels, minlength=len(self.class_names))
        empty = [name for name, count in zip(self.class_names, counts) if count == 0]
        if empty:  # a class no training sample has would still receive flipped labels
            raise DataError(
                f"class folder(s) {', '.join(repr(e) for e in empty)} under {self._train_root()} hold no training "
                f"images, so they would become classes that only label noise puts samples into; add images "
                f"or remove the folder(s)."
            )
        return tables

    def _scan(self, folder: Path, problems: list[str]) -> dict[str, list[str]]:
        """Image paths per class folder under ``folder`` (sorted); other files are reported."""
        found: dict[str, list[str]] = {}
        for name in self._class_folders(folder):
            paths, others = [], []
            for base, dirs, files in os.walk(folder / name):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for file in sorted(files):
                    if file.startswith("."):
                        continue
                    (paths if Path(file).suffix.lower() in EXTENSIONS else others).append(os.path.join(base, file))
            if others:
                problems.append(f"{folder / name}: {len(others)} file(s) that are not images "
                                f"({', '.join(sorted(EXTENSIONS))}) ignored, e.g. {others[0]}")
            if not paths:
                problems.append(f"{folder / name}: class folder without images")
            found[name] = sorted(paths)
        return found

    def _subjects(self, paths: list[str]) -> list[str] | None:
        """The subject of each image (by group_pattern on its path relative to the data root), or None."""
        pattern = compile_group_pattern(self.options.group_pattern)
        if pattern is None:
            return None
        assert self.root is not None
        return [subject_of(pattern, Path(path).relative_to(self.root).as_posix(), self.instance) for path in paths]

    def _split_tables(self) -> dict[str, SampleTable]:
        assert self.root is not None
        if self.options.folds:
            raise DataError(
                f"datasets.{self.instance}.options.folds = {self.options.folds} draws the test set, but {self.root} has "
                f"train/ and test/ folders (a given split): put every class folder directly under the data root, "
                f"or set folds = 0.")
        tables = {}
        for split in ("train", "test"):
            problems: list[str] = []
            found = self._scan(self.root / split, problems)
            refs, labels = [], []
            for name, paths in found.items():
                if name not in self.class_names:
                    problems.append(f"{self.root / split / name}: class {name!r} is not a folder of "
                                    f"{self.root / 'train'}; its {len(paths)} image(s) skipped")
                    continue
                refs += paths
                labels += [self.class_names.index(name)] * len(paths)
            tables[split] = SampleTable(refs=refs, labels=np.asarray(labels, dtype=np.int64), problems=problems)
        refs = [*tables["train"].refs, *tables["test"].refs]
        subjects = self._subjects(refs)
        if subjects is not None:
            check_subjects_apart(subjects, ["train"] * len(tables["train"]) + ["test"] * len(tables["test"]),
                                 f"{self.root} (its train/ and test/ folders)")
        return tables

    def _drawn_tables(self) -> dict[str, SampleTable]:
        assert self.root is not None
        problems: list[str] = []
        found = self._scan(self.root, problems)
        paths = [path for name in self.class_names for path in found[name]]
        labels = [label for label, name in enumerate(self.class_names) for _ in found[name]]
        o = self.options
        chosen = draw_test_set(labels, paths, self.class_names, self._subjects(paths), o.test_fraction, o.split_seed,
                               o.folds, o.fold)
        parts: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
        for i, (path, label) in enumerate(zip(paths, labels)):
            refs, split_labels = parts["test" if i in chosen else "train"]
            refs.append(path)
            split_labels.append(label)
        return {
            split: SampleTable(refs=refs, labels=np.asarray(labels, dtype=np.int64),
                               problems=problems if split == "train" else [])
            for split, (refs, labels) in parts.items()
        }

@nlbench.hookimpl
def register_datasets(register) -> None:
    register(ImageFolder)
