"""Stored evaluations of a run's model on other data (``nlbench evaluate``): one JSON file each.

A finished run's deployable model (``model.pt``) evaluated on another dataset or split is stored
beside the run, in ``<run>/evaluations/<dataset>-<split>-<key>.json``, where ``key`` is a short
hash of what defines the target: the dataset's name, plugin, version, options and data folder
(``--data-root``), and the split. Evaluating the same target again replaces its file (written
atomically), also when its files changed; another target (other options, another folder, another
split) gets a file of its own. The file also records the content fingerprint of the files read.

This module reads and writes those files only (no torch): ``nlbench show`` and ``nlbench table
--layout cross`` read them; :mod:`nlbench.train.transfer` computes them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nlbench.fileio import atomic_write_json, read_json_or_none
from nlbench.identity import short_hash
from nlbench.result import NONE, NUM, ListOf, MapOf, Opt, problems

FOLDER = "evaluations"
#: What the ``kind`` field of an evaluation file says (a JSON file that is not one is ignored).
KIND = "nlbench evaluation"
#: The scores every evaluation stores (percent; ECE: lower is better), as ``table --score`` names them.
SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "ece")

#: The fields readers rely on, checked on every read (:func:`nlbench.result.problems`).
SCHEMA = {
    "kind": str, "run_id": str,
    "target": {"dataset": str, "plugin": str, "split": str, "key": str, "options": dict,
               "version": Opt(str), "fingerprint": Opt((str, NONE)), "root": Opt((str, NONE))},
    "samples": int, "dropped_samples": int,
    "scores": MapOf((NUM, NONE)),
    "report": {"per_class_accuracy": MapOf((NUM, NONE)), "confusion_matrix": ListOf(ListOf(NUM)),
               "class_names": ListOf(str)},
    "evaluated": NUM,
}


def target_key(dataset: str, plugin: str, version: str, options: dict[str, Any], split: str,
               root: str | None) -> str:
    """The short hash naming one evaluation target: equal for a rerun, different for other options or data."""
    return short_hash({"dataset": dataset, "plugin": plugin, "version": version, "options": options,
                       "split": split, "root": root}, 8)


def evaluation_path(run_dir: Path, dataset: str, split: str, key: str) -> Path:
    """Where the evaluation of a run on one target is stored."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)  # an instance name is a TOML key: keep it a file name
    return Path(run_dir) / FOLDER / f"{safe}-{split}-{key}.json"


def write_evaluation(run_dir: Path, record: dict[str, Any]) -> Path:
    """Store ``record`` (replacing the earlier evaluation of the same target); returns its path."""
    target = record["target"]
    path = evaluation_path(run_dir, target["dataset"], target["split"], target["key"])
    atomic_write_json(path, record)
    return path


def read_evaluations(run_dir: Path, run_id: str | None = None) -> tuple[list[dict[str, Any]], list[Path]]:
    """The run's stored evaluations (by dataset, split) and the files skipped as damaged.

    A file of another run (copied in from another folder: its ``run_id`` differs) counts as damaged.
    """
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return [], []
    records: list[dict[str, Any]] = []
    damaged: list[Path] = []
    for path in sorted(folder.glob("*.json")):
        value = read_json_or_none(path)
        if (not isinstance(value, dict) or value.get("kind") != KIND or problems(value, SCHEMA)
                or (run_id is not None and value["run_id"] != run_id)):
            damaged.append(path)
            continue
        records.append(value)
    records.sort(key=lambda r: (r["target"]["dataset"], r["target"]["split"], r["target"]["key"]))
    return records, damaged


def target_text(record: dict[str, Any], run_options: dict[str, Any] | None = None, with_test: bool = True) -> str:
    """``ferplus test``, or ``synthfer test (seed=5)``: the dataset, split and options evaluated on.

    The options shown: those that differ from ``run_options`` (the options of the run's own
    dataset) when the target is a dataset of the run's name, else those set away from the
    plugin's defaults. ``with_test`` False: the split only when it is not test (table columns).
    """
    target = record["target"]
    if run_options is not None and target["dataset"] == record.get("trained_on"):
        shown = {k: v for k, v in target["options"].items() if run_options.get(k) != v}
    else:
        changed = target.get("changed_options")
        shown = changed if isinstance(changed, dict) else {}
    options = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
    split = f" {target['split']}" if with_test or target["split"] != "test" else ""
    return f"{target['dataset']}{split}" + (f" ({options})" if options else "")


def summary_line(record: dict[str, Any], run_options: dict[str, Any] | None = None) -> str:
    """One line of ``nlbench show``: target (:func:`target_text`), accuracy, balanced accuracy, images."""
    scores = record["scores"]

    def num(key: str) -> str:
        value = scores.get(key)
        return "–" if value is None else f"{value:.2f}"

    dropped = record["dropped_samples"]
    return (f"{target_text(record, run_options)}: accuracy {num('accuracy')}, balanced {num('balanced_accuracy')}, "
            f"{record['samples']:,} images" + (f" ({dropped:,} left out)" if dropped else ""))
