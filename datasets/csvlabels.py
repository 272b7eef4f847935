"""csvlabels: a user's own FER data listed in a CSV (image path, label, optional noisy label and split).

The most common layout a lab has that no built-in dataset reads: images under a root folder and a
CSV naming them. Options (``[datasets.csvlabels.options]`` or ``--set datasets.csvlabels.options.K=V``):

* ``csv``: the CSV file, relative to the data root (default ``labels.csv``); comma separated,
  with a header row;
* ``image_column`` (``image``), ``label_column`` (``label``): the image path (relative to the data
  root, or absolute) and its label, a class name or a 0-based class number;
* ``classes``: the class list, in label order (default: the label column's distinct names,
  sorted; with numeric labels it is required);
* ``noisy_label_column`` (none by default): a second label column, the real noisy labels used
  for training with ``--noise-source dataset`` (e.g. one annotator's labels beside a consensus);
* ``split_column`` (none by default): a column of ``train`` / ``test`` values (``training``,
  ``testing`` and ``val``/``valid``/``validation``, counted as test, are accepted too). Without
  it, each class is split by a seeded stratified draw (``test_fraction`` 0.2, ``split_seed`` 0),
  as the ``imagefolder`` dataset does.
* ``size`` (112): side of the stored square images; ``normalisation``: ``imagenet`` or ``half``.

Rows with an unknown label or a missing image are reported by ``nlbench prepare`` and skipped; a
CSV without the named columns, or with no usable row, is an error naming the columns it has.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

import nlbench
from nlbench import DataError, Dataset, SampleTable
from nlbench.dataset import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD, affectnet_mapping, stratified_test_draw
from nlbench.options import Range

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
    #: The class names in label order (default: the label column's names, sorted).
    classes: list[str] = field(default_factory=list)
    #: Share of each class drawn into the test set when there is no split column.
    test_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.2
    #: Seed of that draw.
    split_seed: int = 0
    #: Side of the stored square images.
    size: Annotated[int, Range(16, 512)] = 112
    #: "imagenet" (mean 0.485/0.456/0.406, std 0.229/0.224/0.225) or "half" (0.5/0.5).
    normalisation: Literal["imagenet", "half"] = "imagenet"


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
                raise DataError(f"{path} is a folder; set datasets.csvlabels.options.csv to your CSV file "
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
                raise DataError(f"{path} does not exist: set datasets.csvlabels.options.csv to your CSV file "
                                f"(relative to --data-root).") from None
            except UnicodeDecodeError as err:
                raise DataError(f"{path} is not UTF-8 text ({err.reason}); save it as UTF-8.") from None
            wanted = [self.options.image_column, self.options.label_column]
            wanted += [c for c in (self.options.noisy_label_column, self.options.split_column) if c]
            missing = [c for c in wanted if c not in header]
            if missing:
                raise DataError(
                    f"{path} has no column {', '.join(repr(m) for m in missing)} (its columns: {', '.join(header) or 'none'}); "
                    f"name yours with datasets.csvlabels.options.image_column / label_column / noisy_label_column / "
                    f"split_column.")
            self._rows = rows
        return self._rows

    def _classes(self) -> list[str]:
        if self.options.classes:
            return list(self.options.classes)
        values = {row[self.options.label_column] for row in self._read() if row.get(self.options.label_column)}
        if values and all(v.isdigit() for v in values):
            raise DataError(f"the labels of {self._csv_path()} are numbers: give the class names in label order with "
                            f"datasets.csvlabels.options.classes, e.g. [\"neutral\", \"happiness\", ...].")
        return sorted(values)

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
        where_noisy: dict[str, str] = {}
        kept: list[tuple[str, str, int, int]] = []  # split ("" = to draw), path, label, noisy label (-1: none)
        for number, row in enumerate(self._read(), start=2):
            where = f"{name} line {number}"
            label = self._label(row.get(o.label_column, ""))
            if label is None:
                problems.append(f"{where}: label {row.get(o.label_column)!r} is not one of the classes; row skipped")
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
            kept.append((split, str(path), label, noisy))
            if noisy == -1:
                where_noisy[str(path)] = where_noisy.pop(str(number))
        seen: dict[str, int] = {}
        for number, (_, path_text, _, _) in enumerate(kept):
            if path_text in seen:  # split by row, one image could land in both train and test
                raise DataError(f"{name} lists the image {path_text} more than once; list each image once "
                                f"(a split is drawn by image, and one image must never be in both splits).")
            seen[path_text] = number
        if not kept:
            raise DataError(f"no usable row in {self._csv_path()} ({len(problems)} skipped; first: "
                            f"{problems[0] if problems else 'the file has no data rows'}).")
        if not o.split_column:
            kept = self._draw_split(kept)
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
            raise DataError(f"class(es) {', '.join(repr(e) for e in empty)} have no training row in {name}; "
                            f"remove them from datasets.csvlabels.options.classes or add rows.")
        return tables

    def _draw_split(self, kept: list[tuple[str, str, int, int]]) -> list[tuple[str, str, int, int]]:
        """A seeded stratified train/test draw per class (the imagefolder rule)."""
        out = []
        for label, class_name in enumerate(self.class_names):
            rows = sorted((r for r in kept if r[2] == label), key=lambda r: r[1])
            chosen = stratified_test_draw(len(rows), class_name, self.options.test_fraction, self.options.split_seed)
            out += [("test" if i in chosen else "train", *r[1:]) for i, r in enumerate(rows)]
        return out

@nlbench.hookimpl
def register_datasets(register) -> None:
    register(CsvLabels)
