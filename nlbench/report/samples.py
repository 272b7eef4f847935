"""The per-sample record of a run as a table: one row per training sample and epoch.

The engine records what a method decided about every training sample in every epoch
(:class:`nlbench.train.epoch.SampleRecorder`) in the run folder's ``samples/``: ``labels.npz``
once per run and ``<phase>-epoch-<NNNN>.npz`` per epoch. :func:`sample_table` joins them into one
table (what ``nlbench export --samples RUN`` writes), with class names instead of numbers:

- ``index``: the sample's position among the run's training samples (after the validation
  hold-out and ``train_size``); ``image``: its name as noise files write it (the path relative to
  the data root, or the dataset's reference: synthfer's row number);
- ``clean_label``, ``noisy_label``: the dataset's label and the given (noisy) one;
- ``epoch`` (from 1 within its ``phase``), ``phase``;
- ``seen``: in how many batches of the epoch the sample was (0: not trained on in that epoch);
- ``selected``: true if the method trained on it in at least one of its batches, false if it
  left it out in every batch that said, empty (unknown) where the method returns no selection
  (Standard, SCN, CCT, ...: they train on every sample they see) or the sample was in no batch;
- the method's score (:attr:`nlbench.Method.sample_score_name`, e.g. ``weight``): its
  ``sample_score`` in the last batch that held the sample, stored as float16 (about 3
  significant digits), empty where there is none;
- ``label_used``: the training label at the epoch's end (after any relabelling), and
  ``relabelled_to``: the same where it differs from the noisy label, else empty.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nlbench.errors import DataError, UsageError
from nlbench.store import SAMPLE_LABELS, SAMPLES, SPEC, RunDir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: The record version this reader understands (``version`` in labels.npz).
VERSION = 1
EPOCH_FILE = re.compile(r"(?P<phase>.+)-epoch-(?P<epoch>\d{4,})\.npz")
LABEL_KEYS = ("clean", "given", "name", "classes", "score_name", "version")
EPOCH_KEYS = ("seen", "selected", "score", "relabelled_to")


def _load(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of one record file (data only: ``allow_pickle=False``), or a DataError naming it."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in keys}
    except KeyError as err:
        raise DataError(f"{path} lacks the array {err}; it is not a sample record of this nlbench. Train the "
                        f"run again with --force to record it afresh.") from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path} cannot be read ({err}); the file is damaged. Train the run again with --force "
                        f"to record it afresh.") from None
    return arrays


def epoch_files(folder: Path) -> list[tuple[str, int, Path]]:
    """The per-epoch record files of a run folder as (phase, 0-based epoch, path), in training order
    (the phases in the order metrics.jsonl lists them, then any other by name)."""
    found = []
    for path in sorted((folder / SAMPLES).glob("*-epoch-*.npz")):
        match = EPOCH_FILE.fullmatch(path.name)
        if match and int(match["epoch"]) >= 1:
            found.append((match["phase"], int(match["epoch"]) - 1, path))
    history, _ = RunDir(folder).read_metrics()
    order = list(dict.fromkeys(str(r.get("phase")) for r in history))
    rank = {phase: i for i, phase in enumerate(order)}
    return sorted(found, key=lambda item: (rank.get(item[0], len(rank)), item[0], item[1]))


def missing_epochs(folder: Path, files: list[tuple[str, int, Path]]) -> list[str]:
    """The epochs metrics.jsonl lists without a record (``train 1``, ...): a run resumed by this
    nlbench from a checkpoint written before it recorded samples."""
    history, _ = RunDir(folder).read_metrics()
    have = {(phase, epoch) for phase, epoch, _ in files}
    return [f"{r.get('phase')} {int(r.get('epoch', 0)) + 1}" for r in history
            if (r.get("phase"), r.get("epoch")) not in have]


def sample_table(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """The run's per-sample record as a table (module docstring) and warnings for the user.

    A run folder without a record (trained before nlbench recorded one) is a UsageError that says
    how to get one; a damaged record file a DataError naming it.
    """
    import pandas as pd

    folder = Path(folder)
    if not (folder / SPEC).is_file():
        raise UsageError(f"{folder} is not a run folder (it has no {SPEC}).")
    labels_path = folder / SAMPLE_LABELS
    if not labels_path.is_file():
        raise UsageError(
            f"run {folder} has no per-sample record ({SAMPLE_LABELS} is missing): it was trained by an nlbench "
            f"that did not record one (only per-epoch averages). Train it again with the same "
            f"`nlbench run` or `nlbench sweep` command plus --force; the finished run is replaced only once the "
            f"new one is done.")
    labels = _load(labels_path, LABEL_KEYS)
    version = int(labels["version"])
    if version > VERSION:
        raise UsageError(f"{labels_path} is a sample record of version {version}, newer than this nlbench reads "
                         f"({VERSION}); upgrade nlbench.")
    classes = [str(c) for c in labels["classes"].tolist()]
    score_name = str(labels["score_name"])
    clean, given = labels["clean"].astype(np.int64), labels["given"].astype(np.int64)
    names = labels["name"].astype(str)
    n = int(clean.shape[0])
    files = epoch_files(folder)
    warnings: list[str] = []
    missing = missing_epochs(folder, files)
    if missing:
        warnings.append(f"warning: {len(missing)} epoch(s) of {folder} have no per-sample record (trained before "
                        f"nlbench recorded one, then resumed): {', '.join(missing[:6])}"
                        f"{', ...' if len(missing) > 6 else ''}; --force retrains the run with a whole record.")
    if not files:
        warnings.append(f"warning: {folder} has no epoch recorded yet.")

    parts: dict[str, list[np.ndarray]] = {key: [] for key in (*EPOCH_KEYS, "epoch", "phase")}
    phases: list[str] = []
    for phase, epoch, path in files:
        arrays = _load(path, EPOCH_KEYS)
        for key in EPOCH_KEYS:
            if arrays[key].shape != (n,):
                raise DataError(f"{path} holds {arrays[key].shape} values of {key!r} for the run's {n} training "
                                f"samples; the record is damaged. Train the run again with --force.")
            parts[key].append(arrays[key])
        if phase not in phases:
            phases.append(phase)
        parts["epoch"].append(np.full(n, epoch + 1, dtype=np.int32))
        parts["phase"].append(np.full(n, phases.index(phase), dtype=np.int32))

    def joined(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[key]) if parts[key] else np.zeros(0, dtype=dtype)

    epochs = len(files)
    codes = np.tile(np.arange(n), epochs)

    def names_of(values: np.ndarray) -> pd.Categorical:
        values = np.where((values >= 0) & (values < len(classes)), values, -1)  # -1: empty
        return pd.Categorical.from_codes(values, categories=classes)

    selected = joined("selected", np.int8)
    relabelled = joined("relabelled_to", np.int8).astype(np.int64)
    label_used = np.where(relabelled >= 0, relabelled, np.tile(given, epochs))
    # float16 printed as its shortest decimal (0.765, not 0.76513671875): the precision it has.
    score = joined("score", np.float16).astype(str).astype(np.float64)
    image: Any = (pd.Categorical.from_codes(codes, categories=names) if len(set(names.tolist())) == n
                  else names[codes])
    frame = pd.DataFrame({
        "index": codes,
        "image": image,
        "clean_label": names_of(np.tile(clean, epochs)),
        "noisy_label": names_of(np.tile(given, epochs)),
        "epoch": joined("epoch", np.int32),
        "phase": pd.Categorical.from_codes(joined("phase", np.int32), categories=phases),
        "seen": joined("seen", np.uint8).astype(np.int64),
        "selected": pd.arrays.BooleanArray(selected > 0, selected < 0),  # masked: unknown
        score_name: score,
        "label_used": names_of(label_used),
        "relabelled_to": names_of(relabelled),
    })
    return frame, warnings
