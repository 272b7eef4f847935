"""ferplus: FER2013 faces with Microsoft's FERPlus relabelling, 8 classes, in both layouts users have.

Layouts (option ``layout``: ``auto`` picks ``csv`` when both CSV files are present, else ``folders``):

* ``csv``: ``fer2013.csv`` (or ``fer2013.csv.gz``; header ``emotion,pixels,Usage``, 48x48 grayscale
  pixels as space-separated integers) and ``fer2013new.csv`` (``Usage, Image name`` and 10 vote
  columns), joined **by row position**, never by image name: not-a-face rows have an empty name and
  a few names occur twice. The FER2013 ``emotion`` column is not used.
* ``folders``: ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/`` (at the data root or under
  ``data/``, where Microsoft's ``generate_training_data.py`` writes them), each holding ``label.csv``
  (no header: image name, face box, 10 vote counts) and the ``fer*.png`` images. The face box is
  always the whole 48x48 image and is ignored.

Labels follow the FERPlus authors' majority rule, as CCT did (docs/methods.md §2.3): every emotion with
exactly one vote is set to 0; a row is kept only if its largest remaining count is more than half of
the remaining votes, and dropped when that winner is ``unknown`` or ``NF``. Classes, in FERPlus
order: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt. Splits as CCT: train =
Training + PublicTest (FER2013Train + FER2013Valid), test = PrivateTest (FER2013Test). Option
``classes = 7`` keeps the seven basic expressions (the faces whose majority is contempt are dropped
from both splits, and contempt votes are no label to draw), the FERPlus protocol of EAC and RUL.

Oddities of the original files are reported in ``SampleTable.problems``, never fatal: rows whose
vote total is not 10, kept rows without an image name, names listed twice, malformed rows, and
(folder layout) listed images missing on disk. Flat-colour and byte-identical images are found by
``nlbench prepare`` from the decoded pixels, for this and every other dataset. The two layouts give
slightly different sizes (Microsoft's ``label.csv`` files and ``fer2013new.csv`` come from different
vote snapshots); ``shared/data/ferplus/README.md`` lists both.

Settings: native 48x48 storage (upsampled on the device to the network input), grayscale replicated
to 3 channels, ImageNet normalisation and the CCT RAF-DB/FERPlus augmentation (docs/methods.md §1.2),
100 epochs as in CCT's FERPlus log (§1.3).
"""

from __future__ import annotations

import csv
import gzip
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

import nlbench
from nlbench import DataError, Dataset, SampleTable
from nlbench.dataset import IMAGENET_MEAN, IMAGENET_STD

CLASS_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
#: The 10 vote columns of fer2013new.csv and label.csv, in file order.
VOTE_COLUMNS = CLASS_NAMES + ("unknown", "NF")
SIDE = 48
PIXELS = SIDE * SIDE
USAGES = {"train": ("Training", "PublicTest"), "test": ("PrivateTest",)}
FOLDERS = {"train": ("FER2013Train", "FER2013Valid"), "test": ("FER2013Test",)}
LAYOUTS = ("auto", "csv", "folders")
REAL_NOISE = ("none", "fer2013", "vote", "worst")
CLASS_COUNTS = (8, 7)
BLOCK_ROWS = 2048  # fer2013.csv rows parsed per numpy call (about 40 MB of int64)
#: FER2013's emotion ids (0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral) as
#: FERPlus classes. FER2013 has no contempt: a contempt face keeps its FER2013 label, always wrong.
FER2013_TO_FERPLUS = (4, 5, 6, 1, 3, 2, 0)
MICROSOFT_HINT = "the FERPlus repository (github.com/microsoft/FERPlus) ships fer2013new.csv and the label.csv files"


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """The FERPlus majority label of each row of a (N, 10) vote array, or -1 where the row is dropped."""
    counts = np.asarray(votes, dtype=np.int64).copy()
    counts[counts <= 1] = 0  # a single vote is an outlier (FERPlus authors' rule)
    winner = counts.argmax(axis=1)
    keep = (2 * counts.max(axis=1) > counts.sum(axis=1)) & (winner < len(CLASS_NAMES))
    return np.where(keep, winner, -1)


@dataclass
class FerplusOptions:
    """Which FERPlus layout to read."""

    #: "auto" (csv when fer2013.csv[.gz] and fer2013new.csv are present, else folders), "csv" or "folders".
    layout: Literal[LAYOUTS] = "auto"
    #: Real noisy training labels for --noise-source dataset: "none"; "fer2013" (FER2013's own
    #: single-annotator labels mapped to the FERPlus classes; csv layout, which carries them);
    #: "vote" (one of the face's own ten annotators' votes, drawn with the run's seed); "worst"
    #: (a wrong vote whenever the face has one). Both layouts carry the votes.
    real_noise: Literal[REAL_NOISE] = "none"
    #: 8 (the CCT paper's classes) or 7 (contempt dropped: the seven basic expressions of EAC and RUL).
    classes: Literal[CLASS_COUNTS] = 8


@dataclass
class _Rows:
    """Every row of one layout: where it belongs, its votes, how to read it, what was odd about it."""

    usage: np.ndarray  # split name per row ("train"/"test"; "" for rows of no split)
    votes: np.ndarray  # (N, 10) int, -1 where unreadable
    refs: list[Any]
    problems: list[tuple[str, str]]  # (split, message)
    fer2013: np.ndarray | None = None  # FER2013's own label per row in FERPlus classes (csv layout), -1 if bad


class Ferplus(Dataset):
    """FER2013 images with FERPlus majority labels (8 classes), from either distributed layout."""

    name = "ferplus"
    summary = "FER2013 + FERPlus votes, 8 classes; fer2013.csv + fer2013new.csv, or FER2013* image folders"
    paper = "Barsoum et al., ICMI 2016 (FERPlus); Goodfellow et al., ICONIP 2013 (FER2013)"
    class_names = CLASS_NAMES
    storage_size = SIDE
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    augmentation = "cct"
    train_defaults = {"epochs": 100}
    # neutral, happiness, surprise, sadness, anger, disgust, fear, contempt -> AffectNet order
    # (CCT's remap: swap surprise/sadness and anger/fear, docs/methods.md §2.1)
    to_affectnet = (0, 1, 3, 2, 6, 5, 4, 7)
    Options = FerplusOptions

    def __init__(self, root: Path | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(root, options)
        self._layout: str | None = None
        self._rows: _Rows | None = None
        self._pixels: np.ndarray | None = None
        self._bad_pixel_rows: dict[int, str] = {}
        self._lock = threading.Lock()
        if self.options.classes == 7:
            # Contempt is the last class, so the other indices and the AffectNet mapping stay valid.
            self.class_names = CLASS_NAMES[:7]
            self.to_affectnet = type(self).to_affectnet[:7]

    # ------------------------------------------------------------------ layout
    def _csv_files(self) -> tuple[Path | None, Path | None]:
        assert self.root is not None
        pixels = next((self.root / n for n in ("fer2013.csv", "fer2013.csv.gz") if (self.root / n).is_file()), None)
        votes = self.root / "fer2013new.csv"
        return pixels, votes if votes.is_file() else None

    def _folder_base(self) -> Path | None:
        assert self.root is not None
        return next((b for b in (self.root, self.root / "data") if (b / "FER2013Train").is_dir()), None)

    def layout(self) -> str:
        """The layout read: the forced one, or the one detected under the data root."""
        if self._layout is None:
            self._layout = self._detect_layout()
        return self._layout

    def _detect_layout(self) -> str:
        super().check()
        pixels, votes = self._csv_files()
        wanted = self.options.layout
        if wanted == "auto":
            if pixels and votes:
                return "csv"
            if self._folder_base() is not None:
                return "folders"
            found = [p.name for p in (pixels, votes) if p]
            seen = f" (found only {', '.join(found)})" if found else ""
            raise DataError(
                f"no FERPlus files under {self.root}{seen}. Expected either fer2013.csv (or fer2013.csv.gz) "
                f"together with fer2013new.csv, or the folders FER2013Train, FER2013Valid and FER2013Test with "
                f"label.csv and fer*.png images (at the root or under data/). fer2013.csv is the Kaggle FER2013 "
                f"file; {MICROSOFT_HINT}. nlbench never downloads data."
            )
        if wanted == "csv" and not (pixels and votes):
            missing = "fer2013.csv (or fer2013.csv.gz)" if not pixels else "fer2013new.csv"
            raise DataError(
                f"layout csv: {self.root / missing.split(' ')[0]} does not exist. Put {missing} in {self.root} "
                f"(fer2013.csv is the Kaggle FER2013 file; {MICROSOFT_HINT})."
            )
        if wanted == "folders":
            base = self._folder_base() or self.root
            for folder in FOLDERS["train"] + FOLDERS["test"]:
                if not (base / folder / "label.csv").is_file():
                    raise DataError(
                        f"layout folders: {base / folder / 'label.csv'} does not exist. Each of FER2013Train, "
                        f"FER2013Valid and FER2013Test needs its label.csv ({MICROSOFT_HINT}) and the fer*.png "
                        f"images that its generate_training_data.py writes from fer2013.csv."
                    )
        return wanted

    def check(self) -> None:
        """Check that one complete layout is present (files, headers, row alignment)."""
        self._load()

    # ------------------------------------------------------------------ tables
    def _load(self) -> _Rows:
        if self._rows is None:
            self._rows = self._load_csv() if self.layout() == "csv" else self._load_folders()
        return self._rows

    def read_table(self, split: str) -> SampleTable:
        """Samples of ``split`` kept by the majority rule, labels in FERPlus order."""
        rows = self._load()
        labels = majority_labels(np.where(rows.votes < 0, 0, rows.votes))
        chosen = np.flatnonzero((rows.usage == split) & (labels >= 0) & (rows.votes[:, 0] >= 0)
                                & (labels < len(self.class_names)))
        problems = [message for where, message in rows.problems if where == split]
        noisy, votes, rule, note = None, None, "given", ""
        real = self.options.real_noise if split == "train" else "none"
        if real == "fer2013":
            if rows.fer2013 is None:
                raise DataError(
                    f"real_noise = fer2013 needs FER2013's own labels, which only fer2013.csv carries: "
                    f"use the csv layout (fer2013.csv with fer2013new.csv under {self.root}).")
            chosen = chosen[rows.fer2013[chosen] >= 0]
            noisy = rows.fer2013[chosen]
            contempt = int(np.sum(labels[chosen] == CLASS_NAMES.index("contempt")))
            note = (f"FER2013's single-annotator labels mapped to the FERPlus classes; FER2013 has no contempt, "
                    f"so the {contempt} contempt faces keep their FER2013 label (always wrong)"
                    if len(self.class_names) == 8 else
                    "FER2013's single-annotator labels mapped to the seven basic FERPlus classes")
        elif real in ("vote", "worst"):
            # The eight emotions' votes (unknown and not-a-face votes are no expression label).
            votes, rule = rows.votes[chosen, : len(self.class_names)], real
            note = ("one of each face's own FERPlus annotators' votes (unknown and not-a-face votes left out), "
                    "drawn with the run's seed" if real == "vote" else
                    "a wrong FERPlus annotator vote whenever the face has one, drawn with the run's seed")
        return SampleTable(
            refs=[rows.refs[i] for i in chosen], labels=labels[chosen], problems=problems, noisy_labels=noisy,
            votes=votes, noise_rule=rule, noise_note=note,
        )

    def _load_csv(self) -> _Rows:
        pixels_path, votes_path = self._csv_files()
        assert pixels_path is not None and votes_path is not None
        try:
            new = pd.read_csv(votes_path, dtype={"Usage": str, "Image name": str}, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {votes_path}: {err}") from None
        expected = ["Usage", "Image name", *VOTE_COLUMNS]
        if [str(c).strip() for c in new.columns[: len(expected)]] != expected:
            raise DataError(
                f"{votes_path} does not have the FERPlus header {','.join(expected)} "
                f"(found {','.join(map(str, new.columns))}); use Microsoft's fer2013new.csv."
            )
        lines = _data_lines(pixels_path)
        if lines and not _complete_row(lines[-1]):
            raise DataError(
                f"{pixels_path} ends in the middle of line {len(lines) + 1} (fewer than {PIXELS} pixels, or no "
                f"Usage): the file is truncated. Copy it again from its source."
            )
        if len(lines) != len(new):
            raise DataError(
                f"{pixels_path.name} has {len(lines)} rows but {votes_path.name} has {len(new)}: the two files are "
                f"joined by row position, so both must be complete (or cut to the same rows) in their original order."
            )
        usage_pixels = [line[line.rfind(b",") + 1 :].strip().strip(b'"').decode("ascii", "replace") for line in lines]
        usage_votes = new["Usage"].str.strip().tolist()
        for i, (a, b) in enumerate(zip(usage_pixels, usage_votes, strict=True)):
            if a != b:
                raise DataError(
                    f"line {i + 2} is {a[:20]!r} in {pixels_path.name} but {b[:20]!r} in {votes_path.name}: the files are "
                    f"joined by row position and are not aligned (sorted, filtered or from different copies?)."
                )
        votes = new[list(VOTE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        bad = votes.isna().any(axis=1).to_numpy()
        vote_array = votes.fillna(-1).to_numpy(dtype=np.int64, copy=True)
        vote_array[bad] = -1
        names = new["Image name"].str.strip().tolist()
        usage = _split_of(usage_votes)
        problems: list[tuple[str, str]] = []
        where = f"{votes_path.name} line"
        for i in np.flatnonzero(bad):
            problems.append((usage[i], f"{where} {i + 2}: vote counts are not numbers; row skipped"))
        _vote_problems(problems, usage, vote_array, names, lambda i: f"{where} {i + 2}")
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name and name in seen:
                message = (f"{where} {i + 2}: image name {name} also on line {seen[name] + 2} "
                           f"(harmless here: rows are joined by position)")
                problems.append((usage[i], message))
            seen.setdefault(name, i)
        # A ref names its row as a person would look it up: "fer2013.csv line 1234" (line 1 = header).
        refs = [f"{pixels_path.name} line {i + 2}" for i in range(len(lines))]
        return _Rows(np.asarray(usage, dtype=str), vote_array, refs, problems, _fer2013_labels(lines))

    def _load_folders(self) -> _Rows:
        base = self._folder_base()
        if base is None:
            raise DataError(f"layout folders: {self.root / 'FER2013Train'} does not exist.")
        listed: list[tuple[str, str, Path, str, list[int]]] = []  # split, where, folder, name, votes
        problems: list[tuple[str, str]] = []
        present: dict[Path, set[str]] = {}
        for split, folders in FOLDERS.items():
            for folder_name in folders:
                folder = base / folder_name
                labels = folder / "label.csv"
                if not labels.is_file():
                    raise DataError(
                        f"{labels} does not exist: each FER2013* folder needs the label.csv of the FERPlus "
                        f"repository next to its fer*.png images."
                    )
                present[folder] = {p.name for p in folder.iterdir()}
                count, seen = 0, set()
                for number, fields in enumerate(_csv_rows(labels), start=1):
                    where = f"{folder_name}/label.csv line {number}"
                    if len(fields) != 12:
                        message = f"{where}: expected 12 fields (name, face box, 10 votes), found {len(fields)}"
                        problems.append((split, f"{message}; row skipped"))
                        continue
                    name = fields[0].strip()
                    try:
                        counts = [int(v) for v in fields[2:]]
                    except ValueError:
                        problems.append((split, f"{where}: vote counts are not integers; row skipped"))
                        continue
                    if name in seen:
                        problems.append((split, f"{where}: {name} is listed twice; the second row is skipped"))
                        continue
                    seen.add(name)
                    count += 1
                    listed.append((split, where, folder, name, counts))
                garbage = [m for _, m in problems if m.startswith(f"{folder_name}/label.csv")
                           and ("expected 12 fields" in m or "not integers" in m)]
                malformed = len(garbage)
                if malformed >= 10 or (malformed and malformed >= count):
                    raise DataError(
                        f"{labels}: {malformed} of its {malformed + count} rows are not FERPlus label rows (name, "
                        f"face box, 10 vote counts), e.g. {garbage[0]}. "
                        f"This is not Microsoft's label.csv; copy it again from {MICROSOFT_HINT.split(' ships')[0]}."
                    )
                if count and not any(n.lower().endswith(".png") for n in present[folder]):
                    raise DataError(
                        f"{labels} lists {count} images but {folder} holds no .png image: generate them from "
                        f"fer2013.csv with generate_training_data.py of the FERPlus repository, or point "
                        f"--data-root at the folder holding fer2013.csv and fer2013new.csv (layout csv)."
                    )
        all_votes = np.asarray([row[4] for row in listed], dtype=np.int64).reshape(-1, len(VOTE_COLUMNS))
        kept = majority_labels(all_votes) >= 0
        rows = []
        for i, (split, where, folder, name, _) in enumerate(listed):
            if kept[i] and name not in present[folder]:  # rows the rule drops need no image
                problems.append((split, f"{where}: image {folder / name} does not exist; row skipped"))
                continue
            rows.append(i)
        usage = [listed[i][0] for i in rows]
        refs = [str(listed[i][2] / listed[i][3]) for i in rows]
        vote_array = all_votes[rows].reshape(-1, len(VOTE_COLUMNS))
        _vote_problems(problems, usage, vote_array, [listed[i][3] for i in rows], lambda i: f"image {refs[i]}")
        return _Rows(np.asarray(usage, dtype=str), vote_array, refs, problems)

    # ------------------------------------------------------------------ pixels
    def read_image(self, ref: Any) -> np.ndarray:
        """A 48x48x3 uint8 face: a row of fer2013.csv ("fer2013.csv line N") or a fer*.png file (a path)."""
        if self.layout() == "csv":
            row = int(str(ref).rsplit(" ", 1)[-1]) - 2
            pixels = self._csv_pixels()
            if row in self._bad_pixel_rows:
                raise ValueError(self._bad_pixel_rows[row])
            gray = pixels[row].reshape(SIDE, SIDE)
            return np.repeat(gray[:, :, None], 3, axis=2)
        return super().read_image(ref)

    def _csv_pixels(self) -> np.ndarray:
        """Every row's pixels, parsed once (numpy, in one call) on the first image read."""
        with self._lock:  # the cache decodes with a thread pool: parse once
            if self._pixels is None:
                pixels_path, _ = self._csv_files()
                assert pixels_path is not None
                self._pixels, self._bad_pixel_rows = parse_pixels(_data_lines(pixels_path), pixels_path.name)
            return self._pixels


def parse_pixels(lines: list[bytes], file_name: str) -> tuple[np.ndarray, dict[int, str]]:
    """Parse the ``pixels`` field of every fer2013.csv row into an (N, 2304) uint8 array.

    Rows are parsed by numpy in blocks (one C pass per block, bounded memory). Returns the array
    and, for rows that do not hold 2304 integers in 0..255, the reason (their pixels stay 0 and
    reading them fails with that reason).
    """
    fields = [line[line.find(b",") + 1 : line.rfind(b",")].strip().strip(b'"') for line in lines]
    good = [i for i, f in enumerate(fields) if f.count(b" ") == PIXELS - 1]
    out = np.zeros((len(fields), PIXELS), dtype=np.uint8)
    bad: dict[int, str] = {}
    for i in sorted(set(range(len(fields))) - set(good)):
        bad[i] = f"{file_name} line {i + 2}: {len(fields[i].split())} pixel values instead of {PIXELS} (48x48)"
    for start in range(0, len(good), BLOCK_ROWS):
        rows = good[start : start + BLOCK_ROWS]
        values = _parse_block([fields[i] for i in rows])
        if values is None:  # a malformed value somewhere in the block: parse row by row to name the rows
            for i in rows:
                try:
                    values_i = np.asarray(fields[i].split(), dtype=np.int64)
                except ValueError:
                    bad[i] = f"{file_name} line {i + 2}: pixels are not all integers"
                    continue
                if values_i.min() < 0 or values_i.max() > 255:
                    bad[i] = f"{file_name} line {i + 2}: pixel values outside 0..255"
                out[i] = np.clip(values_i, 0, 255)
            continue
        in_range = ((values >= 0) & (values <= 255)).all(axis=1)
        out[rows] = np.clip(values, 0, 255).astype(np.uint8)
        for k in np.flatnonzero(~in_range):
            bad[rows[k]] = f"{file_name} line {rows[k] + 2}: pixel values outside 0..255"
    return out, bad


def _parse_block(fields: list[bytes]) -> np.ndarray | None:
    """The integers of whole rows of pixels as a (rows, 2304) array, or None when one is malformed."""
    text = b" ".join(fields).decode("ascii", "replace")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy warns (later: raises) on a bad value
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")  # text mode: one C pass
        except (DeprecationWarning, ValueError):
            return None
    return values.reshape(len(fields), PIXELS) if values.size == len(fields) * PIXELS else None


def _fer2013_labels(lines: list[bytes]) -> np.ndarray:
    """FER2013's own emotion column in FERPlus classes, -1 where it is not a number in 0..6."""
    mapping = np.asarray(FER2013_TO_FERPLUS)
    out = np.full(len(lines), -1, dtype=np.int64)
    for i, line in enumerate(lines):
        head = line[: line.find(b",")].strip().strip(b'"')
        if head.isdigit() and int(head) < len(mapping):
            out[i] = mapping[int(head)]
    return out


def _complete_row(line: bytes) -> bool:
    """Whether a fer2013.csv row has its three fields and 2,304 pixels (a cut file's last row has not)."""
    fields = line.split(b",")
    return len(fields) >= 3 and fields[-1].strip().strip(b'"') in (b"Training", b"PublicTest", b"PrivateTest") \
        and len(fields[1].split()) == PIXELS


def _data_lines(path: Path) -> list[bytes]:
    """The data rows of fer2013.csv (header checked and removed)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}; the file is damaged or incomplete.") from None
    lines = [line.rstrip(b"\r") for line in raw.split(b"\n")]
    header = lines[0].decode("ascii", "replace").strip() if lines else ""
    if header.replace(" ", "") != "emotion,pixels,Usage":
        raise DataError(f"{path} does not start with the FER2013 header emotion,pixels,Usage (found {header[:60]!r}).")
    return [line for line in lines[1:] if line.strip()]


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return [row for row in csv.reader(handle) if row]


def _split_of(usages: list[str]) -> list[str]:
    split_of = {usage: split for split, names in USAGES.items() for usage in names}
    return [split_of.get(u, "") for u in usages]


def _vote_problems(problems: list[tuple[str, str]], usage, votes: np.ndarray, names: list[str], where) -> None:
    """Report rows whose vote total is not 10 and kept rows without an image name."""
    totals = votes.sum(axis=1)
    labels = majority_labels(np.where(votes < 0, 0, votes))
    for i in np.flatnonzero((totals != 10) & (votes[:, 0] >= 0)):
        fate = f"kept as {CLASS_NAMES[labels[i]]}" if labels[i] >= 0 else "dropped by the majority rule"
        problems.append((usage[i], f"{where(i)}: {totals[i]} votes instead of 10 ({fate})"))
    for i in np.flatnonzero(labels >= 0):
        if not names[i]:
            message = (f"{where(i)}: no image name (judged not a face by FERPlus) "
                       f"but the votes give {CLASS_NAMES[labels[i]]}; kept")
            problems.append((usage[i], message))


@nlbench.hookimpl
def register_datasets(register) -> None:
    register(Ferplus)
