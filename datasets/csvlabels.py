"""csvlabels: a user's own FER data listed in a CSV (image path, label, optional noisy label and split).

The most common layout a lab has that no built-in dataset reads: images under a root folder and a
CSV naming them. Options (``[datasets.csvlabels.options]`` or ``--set datasets.csvlabels.options.K=V``):

* ``csv``: the CSV file, relative to the data root (default ``labels.csv``); comma separated,
  with a header row;
* ``image_column`` (``image``), ``label_column`` (``label``): the image path (relative to the data
  root, or absolute) and its label, a class name or a 0-based class number;
* ``classes``: the class list, in label order (default: the label column's distinct names,
  sorted; with numeric labels it is required). Labels are matched to classes ignoring case, and
  the default list has one class per name ignoring case, spelled as most rows spell it (ties: the
  first spelling in sort order), so ``Happy`` and ``happy`` are one class;
* ``noisy_label_column`` (none by default): a second label column, the real noisy labels used
  for training with ``--noise-source dataset`` (e.g. one annotator's labels beside a consensus);
* ``split_column`` (none by default): a column of ``train`` / ``test`` values (``training``,
  ``testing`` and ``val``/``valid``/``validation``, counted as test, are accepted too). Without
  it, each class is split by a seeded stratified draw (``test_fraction`` 0.2, ``split_seed`` 0),
  as the ``imagefolder`` dataset does.
* ``size`` (112): side of the stored square images; ``normalisation``: ``imagenet`` or ``half``.
* ``group_column`` (none by default): a column of subject ids, so that no subject has rows in both
  train and test; or ``group_pattern`` (none by default; not both): a Python regular expression
  searched (``re.search``) in each image's path relative to the data root (its full path when it
  lies outside), its first group (or the whole match, when it has no group) being the subject,
  e.g. ``'(S\\d+)_'`` for CK+ names such as ``S005_001_00000011.png``. A row without a subject (an
  empty cell, an image the pattern does not match) is an error. Without a split column, the
  seeded draw is then over subjects, not rows: the subjects sorted by id, a seeded permutation
  (``split_seed``), the first ``round(n_subjects * test_fraction)``, at least 1 and at most
  n_subjects - 1, go to the test set with all their rows. It cannot be stratified by class (a
  subject's rows go together, whatever their labels). With a split column, a subject with rows in
  both splits is an error naming it.
* ``folds`` (0, off; else 2 to 100) and ``fold`` (1, from 1 to folds): k-fold cross-validation, the
  usual protocol of CK+, JAFFE and Oulu-CASIA. The rows are split into ``folds`` seeded parts
  (``split_seed``) and fold ``fold`` is the test set, the others training; each row is in the test
  set of exactly one fold. Without groups the folds are stratified: per class (in label order), its
  rows sorted by image path are put in a seeded order and dealt round-robin into the folds, the deal
  going on from one class to the next (fold sizes differ by at most 1, and each fold has every class
  with ``folds`` rows or more); with groups the subjects, sorted and seeded, are dealt. ``test_fraction``
  is ignored when ``folds`` > 0; ``folds`` with ``split_column`` is an error (both give the test set),
  and so is ``fold`` without ``folds``.

Options added later (``group_column``, ``group_pattern``, ``folds``, ``fold``) enter the run id only
when set, so runs stored before them keep their ids.

Rows with an unknown label or a missing image are reported by ``nlbench prepare`` and skipped (one
line names the labels that are not classes and the classes); a CSV without the named columns, or
with no usable row, is an error naming the columns it has.

Several CSV datasets are several instances of this plugin, each named in benchmark.toml
(``[datasets.NAME]`` with ``plugin = "csvlabels"`` and its own ``options``): runs, tables and
figures keep them apart by that name.
"""

from __future__ import annotations

import csv
import functools
from collections import Counter
from dataclasses import dataclass, field
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

NORMALISATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": (HALF_MEAN, HALF_STD)}
SPLIT_VALUES = {"train": "train", "training": "train", "test": "test", "testing": "test", "val": "test",
                "valid": "test", "validation": "test"}


@dataclass
class CsvlabelsOptions:
    """Which CSV, which columns, which classes, how to split and store."""

    #: The CSV file (relative to the data root, or absolute), with a header row.
    csv: str = "labels.csv"
    #: Column of the image paths (relative to the data root, or absolute).
    image_column: str = "image"
    #: Column of the labels: class names, or 0-based class numbers (then give classes).
    label_column: str = "label"
    #: Column of real noisy training labels, for --noise-source dataset ("" = none).
    noisy_label_column: str = ""
    #: Column of train/test values ("" = a seeded stratified draw with test_fraction).
    split_column: str = ""
    #: The class names in label order (default: the label column's names ignoring case, sorted).
    classes: list[str] = field(default_factory=list)
    #: Share of each class (or of the subjects, with a group option) drawn into the test set when
    #: there is no split column; ignored when folds > 0.
    test_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.2
    #: Seed of that draw, and of the folds.
    split_seed: int = 0
    #: Side of the stored square images.
    size: Annotated[int, Range(16, 512)] = 112
    #: "imagenet" (mean 0.485/0.456/0.406, std 0.229/0.224/0.225) or "half" (0.5/0.5).
    normalisation: Literal["imagenet", "half"] = "imagenet"
    #: Column of each row's subject: no subject in both train and test ("" = none).
    group_column: str = added("")
    #: Regular expression finding the subject in each image's path relative to the data root (its
    #: first group, or the whole match), e.g. '(S\d+)_'; instead of group_column ("" = none).
    group_pattern: str = added("")
    #: k-fold cross-validation: the number of folds (0 = off, else 2 to 100); not with split_column.
    folds: Annotated[int, Range(0, 100)] = added(0)
    #: The fold (1 to folds) whose rows form the test set; the other folds train.
    fold: Annotated[int, Range(1, 100)] = added(1)

    def __post_init__(self) -> None:
        check_protocol_options(self.group_pattern, self.folds, self.fold, self.group_column, self.split_column)


class CsvLabels(Dataset):
    """Images under a root folder, listed with their labels in a CSV file."""

    name = "csvlabels"
    summary = "your own images listed in a CSV: image path, label (optional noisy label and split columns)"
    paper = "-"
    class_names = ()  # per CSV: set on the instance
    augmentation = "cct"
    Options = CsvlabelsOptions

    def __init__(self, root: Path | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(root, options)
        self.storage_size = self.options.size
        self.mean, self.std = NORMALISATIONS[self.options.normalisation]
        self._rows: list[dict[str, str]] | None = None
        if self.root is not None and self._csv_path().is_file():
            self.class_names = tuple(self._classes())
            self.to_affectnet = affectnet_mapping(self.class_names)

    def _csv_path(self) -> Path:
        assert self.root is not None
        path = Path(self.options.csv).expanduser()
        return path if path.is_absolute() else self.root / path

    def _read(self) -> list[dict[str, str]]:
        if self._rows is None:
            path = self._csv_path()
            if path.is_dir():
                raise DataError(f"{path} is a folder; set datasets.{self.instance}.options.csv to your CSV file "
                                f"(relative to --data-root).")
            rows = []
            try:
                with open(path, newline="", encoding="utf-8-sig") as handle:
                    reader = csv.DictReader(handle)
                    for row in reader:
                        if None in row or None in row.values():  # more fields than the header, or fewer
                            extra = len(row.get(None) or [])
                            raise DataError(f"{path} line {reader.line_num}: "
                                            + (f"{extra} field(s) more than the header's {len(reader.fieldnames or [])}"
                                               if extra else "fewer fields than the header")
                                            + "; check its commas and quotes.")
                        rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
                    header = [h.strip() for h in (reader.fieldnames or [])]
            except csv.Error as err:  # an open quote, a NUL byte (a binary file)
                raise DataError(f"{path} line {reader.line_num} is not valid CSV ({err}); check its quotes, "
                                f"or that it is a text file.") from None
            except FileNotFoundError:
                raise DataError(f"{path} does not exist: set datasets.{self.instance}.options.csv to your CSV file "
                                f"(relative to --data-root).") from None
            except UnicodeDecodeError as err:
                raise DataError(f"{path} is not UTF-8 text ({err.reason}); save it as UTF-8.") from None
            wanted = [self.options.image_column, self.options.label_column]
            wanted += [c for c in (self.options.noisy_label_column, self.options.split_column,
                                   self.options.group_column) if c]
            missing = [c for c in wanted if c not in header]
            if missing:
                raise DataError(
                    f"{path} has no column {', '.join(repr(m) for m in missing)} (its columns: {', '.join(header) or 'none'}); "
                    f"name yours with datasets.{self.instance}.options.image_column / label_column / noisy_label_column / "
                    f"split_column / group_column.")
            self._rows = rows
        return self._rows

    def _classes(self) -> list[str]:
        if self.options.classes:
            return list(self.options.classes)
        names = [row[self.options.label_column] for row in self._read() if row.get(self.options.label_column)]
        if names and all(v.isdigit() for v in names):
            raise DataError(f"the labels of {self._csv_path()} are numbers: give the class names in label order with "
                            f"datasets.{self.instance}.options.classes, e.g. [\"neutral\", \"happiness\", ...].")
        # Labels are matched ignoring case: one class per lower-cased name, spelled as most rows spell
        # it (ties: the first spelling in sort order).
        spellings: dict[str, Counter[str]] = {}
        for name in names:
            spellings.setdefault(name.lower(), Counter())[name] += 1
        return sorted(min(counts, key=lambda v: (-counts[v], v)) for counts in spellings.values())

    def check(self) -> None:
        """Check the CSV, its columns and that at least two classes have training rows."""
        super().check()
        if len(self.class_names) < 2:
            self.class_names = tuple(self._classes())
        if len(self.class_names) < 2:
            raise DataError(f"{self._csv_path()} names fewer than 2 classes in column {self.options.label_column!r}.")
        self.table("train")

    def _label(self, text: str) -> int | None:
        if text.isdigit():
            value = int(text)
            return value if value < len(self.class_names) else None
        lowered = {c.lower(): i for i, c in enumerate(self.class_names)}
        return lowered.get(text.lower())

    def read_table(self, split: str) -> SampleTable:
        """The rows of ``split`` whose label is known and whose image exists."""
        return self._both[split]

    @functools.cached_property
    def _both(self) -> dict[str, SampleTable]:
        """Both splits, read together: the CSV is parsed once and the split drawn over all its rows."""
        assert self.root is not None
        o = self.options
        name = self._csv_path().name
        problems: list[str] = []
        unknown: Counter[str] = Counter()  # labels that are not classes -> rows
        where_noisy: dict[str, str] = {}
        pattern = compile_group_pattern(o.group_pattern)
        # split ("" = to draw), path, label, noisy label (-1: none), subject ("" = no groups)
        kept: list[tuple[str, str, int, int, str]] = []
        for number, row in enumerate(self._read(), start=2):
            where = f"{name} line {number}"
            label = self._label(row.get(o.label_column, ""))
            if label is None:
                problems.append(f"{where}: label {row.get(o.label_column)!r} is not one of the classes; row skipped")
                unknown[row.get(o.label_column, "")] += 1
                continue
            noisy = label
            if o.noisy_label_column:  # needed for training rows only: checked after the split
                noisy = self._label(row.get(o.noisy_label_column, ""))
                if noisy is None:
                    noisy = -1
                    where_noisy[str(number)] = f"{where}: noisy label {row.get(o.noisy_label_column)!r} is not a class"
            split = ""
            if o.split_column:
                split = SPLIT_VALUES.get(row.get(o.split_column, "").lower(), "?")
                if split == "?":
                    problems.append(f"{where}: split {row.get(o.split_column)!r} is not train or test; row skipped")
                    continue
            image = Path(row.get(o.image_column, ""))
            path = image if image.is_absolute() else self.root / image
            if not row.get(o.image_column) or not path.is_file():
                problems.append(f"{where}: image {path} does not exist; row skipped")
                continue
            subject = ""
            if o.group_column:
                subject = row.get(o.group_column, "")
                if not subject:
                    raise DataError(f"{where}: no subject in column {o.group_column!r} (group_column); give every "
                                    f"row its subject, or leave datasets.{self.instance}.options.group_column empty.")
            elif pattern is not None:
                subject = subject_of(pattern, self._relative(path), self.instance)
            kept.append((split, str(path), label, noisy, subject))
            if noisy == -1:
                where_noisy[str(path)] = where_noisy.pop(str(number))
        if unknown:  # one line naming the mismatch, first, before the rows it skipped
            problems.insert(0, self._mismatch(unknown))
        seen: dict[str, int] = {}
        for number, (_, path_text, *_) in enumerate(kept):
            if path_text in seen:  # split by row, one image could land in both train and test
                raise DataError(f"{name} lists the image {path_text} more than once; list each image once "
                                f"(a split is drawn by image, and one image must never be in both splits).")
            seen[path_text] = number
        if not kept:
            raise DataError(f"no usable row in {self._csv_path()} ({len(problems)} skipped; first: "
                            f"{problems[0] if problems else 'the file has no data rows'}).")
        if not o.split_column:
            kept = self._draw_split(kept)
        elif o.group_column or pattern is not None:
            check_subjects_apart([r[4] for r in kept], [r[0] for r in kept], f"{name} (column {o.split_column!r})")
        unlabelled = [r for r in kept if r[0] == "train" and r[3] == -1]
        problems += [f"{where_noisy[r[1]]}; training row skipped" for r in unlabelled]
        kept = [r for r in kept if not (r[0] == "train" and r[3] == -1)]
        tables = {}
        for split in ("train", "test"):
            rows = [r for r in kept if r[0] == split]
            tables[split] = SampleTable(
                refs=[r[1] for r in rows], labels=np.asarray([r[2] for r in rows], dtype=np.int64),
                noisy_labels=(np.asarray([r[3] for r in rows], dtype=np.int64)
                              if o.noisy_label_column and split == "train" else None),
                problems=problems if split == "train" else [],
                noise_note=f"column {o.noisy_label_column!r} of {name}" if o.noisy_label_column else "")
        counts = np.bincount(tables["train"].labels, minlength=len(self.class_names))
        empty = [c for c, n in zip(self.class_names, counts) if n == 0]
        if empty:
            listed = ", ".join(repr(e) for e in empty)
            if o.classes:
                raise DataError(f"class(es) {listed} of datasets.{self.instance}.options.classes have no training row in "
                                f"{name}" + (f"; {self._mismatch(unknown)}" if unknown else "")
                                + "; remove them from the classes, or add training rows.")
            where = "the test fold" if o.folds else "the test split"
            raise DataError(f"class(es) {listed} of {name} have no training row (their rows are all in {where}, "
                            f"or were skipped: `nlbench prepare` lists why); add training rows.")
        return tables

    def _mismatch(self, unknown: Counter[str]) -> str:
        """One line naming the labels that are not classes, and the classes they were compared with."""
        found = ", ".join(f"{label!r} ({count} row{'s' if count > 1 else ''})" for label, count in unknown.most_common())
        classes = ", ".join(repr(c) for c in self.class_names)
        given = (f"given with datasets.{self.instance}.options.classes" if self.options.classes
                 else f"the names of column {self.options.label_column!r}")
        return (f"{sum(unknown.values())} row(s) skipped: their label(s) {found} are not classes; the classes "
                f"({given}, matched ignoring case) are {classes}")

    def _relative(self, path: Path) -> str:
        """An image's path relative to the data root (what group_pattern searches), or its full path if outside it."""
        assert self.root is not None
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def _draw_split(self, kept: list[tuple[str, str, int, int, str]]) -> list[tuple[str, str, int, int, str]]:
        """The seeded train/test draw (the imagefolder rules): per class, over subjects, or a fold.

        Rows come out class by class (label order), each class's sorted by image path.
        """
        o = self.options
        rows = [r for label in range(len(self.class_names)) for r in sorted((r for r in kept if r[2] == label),
                                                                            key=lambda r: r[1])]
        groups = [r[4] for r in rows] if o.group_column or o.group_pattern else None
        chosen = draw_test_set([r[2] for r in rows], [r[1] for r in rows], self.class_names, groups, o.test_fraction,
                               o.split_seed, o.folds, o.fold)
        return [("test" if i in chosen else "train", *r[1:]) for i, r in enumerate(rows)]

@nlbench.hookimpl
def register_datasets(register) -> None:
    register(CsvLabels)
