"""Noise files that travel: the noisy training labels of a run, by sample name, with their checksum.

Two formats are read, one is written:

* nlbench's own (written by ``nlbench noise export``)::

      # nlbench noise file 1
      # settings: {"dataset": "rafdb", "rate": 0.4, "mode": "flip", "seed": 1, ...}
      # labels-sha256: <sha256 of the lines below the comments>
      name,label,class
      Image/aligned/train_00001_aligned.jpg,3,happiness

  ``label`` is the 0-based class index of the dataset, ``class`` its name (both are checked).
  A damaged file (its lines no longer hash to ``labels-sha256``) is refused.
* the lists the official SCN / EAC / CCT repositories publish for RAF-DB: ``name label`` per line,
  whitespace separated, no header. Labels are integers from the dataset's ``list_label_base``
  (1 for RAF-DB, whose lists count from 1; 0 elsewhere; ``--noise-file-base`` overrides it) or
  class names. The lists those repositories published are recognised by their sha256
  (:mod:`nlbench.data.published_noise`): the run's note names them and their rate is checked.

Rows are matched to the training samples by name: the sample's path relative to the data root,
else its file name, else its file name without RAF-DB's ``_aligned`` suffix (lists name
``train_00001.jpg`` for the image ``train_00001_aligned.jpg``). Every training sample must be
covered; rows naming other samples (a list of both splits) are ignored and counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlbench.errors import DataError
from nlbench.identity import portable_ref

MAGIC = "# nlbench noise file 1"
HEADER = "name,label,class"


def sample_names(refs: Sequence[Any], root: Path | None) -> list[str]:
    """The name of each sample as noise files write it: its path relative to the data root, or its ref."""
    names = []
    for ref in refs:
        first = ref[0] if isinstance(ref, (tuple, list)) and ref else ref
        names.append(str(portable_ref(first, root.resolve() if root is not None else None)))
    if len(set(names)) != len(names) and any(isinstance(r, (tuple, list)) for r in refs):
        # Several faces of one image (AffectNet boxes): the box makes the name unique.
        names = [f"{n}#{'x'.join(map(str, r[1]))}" if isinstance(r, (tuple, list)) and len(r) > 1 else n
                 for n, r in zip(names, refs)]
    return names


def _aliases(name: str) -> list[str]:
    """The keys a sample is found by, most specific first."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    stripped = (stem.removesuffix("_aligned") + dot + ext) if dot else base
    return [name, base, stripped]  # one key per matching level, even when two coincide


def body_sha256(lines: Sequence[str]) -> str:
    """SHA-256 of a noise file's data lines (header line included), joined by newlines."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def write_noise_file(path: Path, names: Sequence[str], labels: np.ndarray, class_names: Sequence[str],
                     settings: dict[str, Any]) -> str:
    """Write nlbench's noise-file format atomically; returns the SHA-256 of the file's bytes."""
    from nlbench.fileio import atomic_write_bytes

    for name in names:
        if any(c in name for c in ",\n\r"):
            raise DataError(f"sample name {name!r} holds a comma or a line break; it cannot be written to a noise file.")
    body = [HEADER] + [f"{n},{int(y)},{class_names[int(y)]}" for n, y in zip(names, labels)]
    text = "\n".join([MAGIC, f"# settings: {json.dumps(settings, sort_keys=True)}",
                      f"# labels-sha256: {body_sha256(body)}", *body]) + "\n"
    data = text.encode("utf-8")
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_rows(path: Path, class_names: Sequence[str], label_base: int) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The (name, label) rows of a noise file in either format, and its settings (nlbench format)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"noise file {path} is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except OSError as err:
        raise DataError(f"cannot read noise file {path}: {err.strerror or err}.") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"noise file {path} is empty.")
    if lines[0].strip() == MAGIC:
        return _read_own(path, lines, class_names)
    if lines[0].strip().startswith("# nlbench noise file"):
        raise DataError(f"noise file {path} is of a newer format ({lines[0].strip()!r}); upgrade nlbench.")
    return _read_list(path, lines, class_names, label_base), {}


def _read_own(path: Path, lines: list[str], class_names: Sequence[str]) -> tuple[list[tuple[str, int]], dict]:
    comments = [line for line in lines if line.startswith("#")]
    body = [line for line in lines if not line.startswith("#")]
    meta = {key.strip(): value.strip() for key, _, value in (c[1:].partition(":") for c in comments[1:])}
    expected = meta.get("labels-sha256")
    if expected and body_sha256(body) != expected:
        raise DataError(
            f"noise file {path} is damaged: its labels no longer match the labels-sha256 in its header (edited or "
            f"truncated?). Export it again with `nlbench noise export`.")
    if not body or body[0].strip() != HEADER:
        raise DataError(f"noise file {path}: the first line after the comments must be {HEADER!r}.")
    try:
        settings = json.loads(meta.get("settings", "{}"))
    except json.JSONDecodeError:
        raise DataError(f"noise file {path}: the settings line is not JSON.") from None
    rows = []
    for number, line in enumerate(body[1:], start=len(comments) + 2):
        fields = line.split(",")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            raise DataError(f"noise file {path} line {number}: expected 'name,label,class', got {line[:60]!r}.")
        name, label, cls = fields[0], int(fields[1]), fields[2].strip()
        if label >= len(class_names) or class_names[label] != cls:
            raise DataError(
                f"noise file {path} line {number}: label {label} ({cls}) is not a class of this dataset "
                f"({', '.join(f'{i} {c}' for i, c in enumerate(class_names))}); was it written for another dataset?")
        rows.append((name, label))
    return rows, settings


def _read_list(path: Path, lines: list[str], class_names: Sequence[str], base: int) -> list[tuple[str, int]]:
    by_name = {c.lower(): i for i, c in enumerate(class_names)}
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"noise file {path} line {number}: expected '<name> <label>', got {line[:60]!r}.")
        name, text = fields
        if text.lstrip("-").isdigit():
            label = int(text) - base
            if not 0 <= label < len(class_names):
                raise DataError(
                    f"noise file {path} line {number}: label {text} is outside {base}..{base + len(class_names) - 1} "
                    f"(labels counted from {base}); if the file counts from {1 - base if base in (0, 1) else 0}, "
                    f"give --noise-file-base {1 - base if base in (0, 1) else 0}.")
        elif text.lower() in by_name:
            label = by_name[text.lower()]
        else:
            raise DataError(f"noise file {path} line {number}: {text!r} is neither a class number nor one of "
                            f"{', '.join(class_names)}.")
        rows.append((name, label))
    return rows


def match_labels(path: Path, rows: list[tuple[str, int]], names: Sequence[str], *, what: str = "noise file",
                 allow_missing: bool = False) -> tuple[np.ndarray, int]:
    """The label of every training sample from the file's rows; also how many rows named no training sample.

    ``what`` names the file in messages; ``allow_missing`` leaves -1 for the samples no row names
    (the caller explains the gap) instead of refusing the file."""
    levels: list[dict[str, int]] = []
    for depth in range(3):
        keys: dict[str, int] = {}
        clashes: set[str] = set()
        for i, name in enumerate(names):
            key = _aliases(name)[depth]
            if key in keys:
                clashes.add(key)
            keys[key] = i
        levels.append({k: v for k, v in keys.items() if k not in clashes})
    labels = np.full(len(names), -1, dtype=np.int64)
    unmatched = 0
    for name, label in rows:
        index = next((level[key] for level, key in zip(levels, _aliases(name)) if key in level), None)
        if index is None:
            unmatched += 1
            continue
        if labels[index] >= 0 and labels[index] != label:
            raise DataError(f"{what} {path} gives sample {names[index]} two different labels.")
        labels[index] = label
    missing = np.flatnonzero(labels < 0)
    if missing.size and not allow_missing:
        first = ", ".join(names[i] for i in missing[:3])
        raise DataError(
            f"noise file {path} has no label for {missing.size} of the {len(names)} training samples (first: {first}); "
            f"it must list every training sample by name (as `nlbench noise export` writes them).")
    return labels, unmatched


def labels_from_file(path: str | None, dataset: Any, table: Any, *, expected_sha256: str | None = None,
                     label_base: int | None = None):
    """The noisy training labels a noise file gives ``dataset``'s training ``table``, as a NoiseResult."""
    from nlbench.data.noise import NoiseResult
    from nlbench.identity import file_sha256

    if path is None or not Path(path).is_file():
        raise DataError(f"noise file {path} does not exist (it was read when the run was specified).")
    from nlbench.data.published_noise import recognise

    sha = file_sha256(Path(path))
    if expected_sha256 is not None and sha != expected_sha256:
        raise DataError(f"noise file {path} changed since the run was specified (its sha256 differs); "
                        f"start the run again to train on the new labels.")
    base = getattr(dataset, "list_label_base", 0) if label_base is None else label_base
    rows, settings = read_rows(Path(path), tuple(dataset.class_names), base)
    _check_same_data(Path(path), settings, dataset, table)
    labels, unmatched = match_labels(Path(path), rows, sample_names(table.refs, dataset.root))
    realised = float(np.mean(labels != table.labels)) if len(labels) else 0.0
    # A list an official repository published: its origin goes into the note, its rate is checked.
    published = recognise(sha, realised, len(labels), Path(path).name)
    extra = f"; {unmatched} of its rows name no training sample and were ignored" if unmatched else ""
    return NoiseResult(labels, realised, None, f"labels of noise file {Path(path).name}{published}{extra}")


def samples_sha256(table: Any, root: Path | None) -> str:
    """SHA-256 of the training samples' names and file sizes: other files at the same names give another digest."""
    from nlbench.identity import file_size

    digest = hashlib.sha256()
    for name, ref in zip(sample_names(table.refs, root), table.refs):
        digest.update(f"{name}\t{file_size(ref)}\n".encode())
    return digest.hexdigest()


def _check_same_data(path: Path, settings: dict[str, Any], dataset: Any, table: Any) -> None:
    """An exported file is used only on the data it was exported from (names alone can match other data)."""
    if not settings:
        return
    name = getattr(dataset, "instance", dataset.name)  # the name runs give it (a configured instance's)
    if settings.get("dataset") not in (None, name):
        raise DataError(f"noise file {path} was exported for dataset {settings['dataset']!r}, not {name!r}.")
    import dataclasses

    expected = settings.get("samples_sha256")
    if expected and expected != samples_sha256(table, dataset.root):
        raise DataError(
            f"noise file {path} was exported from other training samples (other files at these names, or options "
            f"that select other rows), so its labels may name other faces; export it again from this data.")
    if settings.get("data_fingerprint") is None and "dataset_options" in settings:
        # Generated data has no files to fingerprint: its options say what the samples are.
        ours = dataclasses.asdict(dataset.options)
        differ = sorted(k for k in set(ours) | set(settings["dataset_options"])
                        if ours.get(k) != settings["dataset_options"].get(k))
        if differ:
            raise DataError(
                f"noise file {path} was exported from {name} with other options ({', '.join(differ)} differ), "
                f"so its sample names do not name the same samples; export it again with these options.")
