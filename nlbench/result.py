"""The typed result of a finished run: what result.json and metrics.jsonl hold, checked on every read.

:func:`nlbench.train.result.build_result` is the one place a result is built; every reader
(``table``, ``plot``, ``report``, ``export``, ``show``, ``status``) reads it through
:func:`parse_result`, which checks the *types* of every field a reader relies on, not only the
JSON syntax. A damaged or hand-edited file (a string where a number belongs, a list instead of
an object, ``null`` metrics) is a :class:`DamagedResult` naming the file and the field, which
readers turn into a warning and skip: never an "internal error".

The schema is a small declarative language: a Python type (or a tuple of them) for a value,
``{key: schema}`` for an object (other keys allowed), :class:`Opt` for a key that may be absent
(results written by earlier versions lack some), :class:`ListOf` and :class:`MapOf` for
collections. ``NUM`` is an int or float, never a bool.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlbench.errors import DataError


class DamagedResult(DataError):
    """A result.json (or metrics line) whose content does not have the types of a result."""


@dataclass(frozen=True)
class Opt:
    """A key that may be absent."""

    schema: Any


@dataclass(frozen=True)
class ListOf:
    """A JSON array whose items all match ``schema``."""

    schema: Any


@dataclass(frozen=True)
class MapOf:
    """A JSON object whose values all match ``schema`` (any keys)."""

    schema: Any


class _Number:
    """Marker: an int or a float, not a bool."""


NUM = _Number
NONE = type(None)
ANY = object

#: What a selection-rule summary of one test-accuracy curve holds (:mod:`nlbench.train.model_selection`).
SUMMARY = {
    "last": NUM, "lastk": NUM, "k": int, "best": NUM, "best_epoch": int, "curve": ListOf(NUM),
    "val": Opt(NUM), "val_epoch": Opt(int), "val_curve": Opt(ListOf(NUM)),
    "scores": Opt(MapOf(MapOf((NUM, NONE)))),
}
#: A per-class report of the final model (:func:`nlbench.train.evaluate.per_class_report`).
REPORT = {"per_class_accuracy": Opt(MapOf((NUM, NONE))), "confusion_matrix": ListOf(ListOf(NUM)),
          "class_names": ListOf(str)}
#: result.json.
RESULT_SCHEMA = {
    "run_id": str, "method": str, "dataset": str, "seed": int,
    "noise": {"rate": NUM, "mode": Opt(str), "source": Opt(str), "realised_rate": Opt((NUM, NONE)),
              "transitions": Opt(ListOf(ListOf(NUM))), "rule": Opt(str), "note": Opt(str),
              "generator_seed": Opt((int, NONE)), "file": Opt({"path": Opt((str, NONE)), "sha256": Opt((str, NONE))}),
              "trained": Opt({"samples": int, "wrong": int, "rate": NUM, "wrong_by_label": MapOf((NUM, NONE))})},
    "metrics": {"model": SUMMARY, "members": Opt(MapOf(SUMMARY))},
    "hparams": Opt(dict), "train": Opt(dict), "runtime": Opt(dict), "dataset_version": Opt(str),
    "dataset_options": Opt(dict), "data_fingerprint": Opt((str, NONE)), "dataset_plugin": Opt(str),
    "final": Opt({"model": Opt((REPORT, NONE)), "members": Opt(MapOf(REPORT))}),
    "deployment": Opt({"deploys": Opt(str), "single": Opt(str), "beside": Opt(MapOf(str)),
                       "variant": Opt(ListOf(str))}),
    "cost": Opt(MapOf((NUM, NONE))), "finished": Opt(NUM), "test_size": Opt(int),
    "test_split": Opt({"size": int, "sha256": str, "class_counts": ListOf(int)}),
    "code": Opt(dict),
    "pretrained": Opt(({"sha256": Opt((str, NONE)), "path": Opt((str, NONE))}, NONE)),
    "initialisation": Opt(str), "uses_noise_rate": Opt(bool), "forget_rate_from": Opt(str),
    "diagnostics": Opt(dict), "selection_rule": Opt(str), "validation": Opt(dict), "environment": Opt(dict),
}
#: One line of metrics.jsonl: one epoch of one phase.
METRICS_SCHEMA = {
    "phase": str, "epoch": int, "test": MapOf((NUM, NONE)), "epochs": Opt(int), "lr": Opt((NUM, NONE)),
    "train": Opt(dict), "test_scores": Opt(MapOf(dict)), "val": Opt(MapOf((NUM, NONE))),
    "val_clean": Opt(MapOf((NUM, NONE))), "seconds": Opt(NUM),
}


def problems(value: Any, schema: Any, where: str = "") -> list[str]:
    """Every place where ``value`` does not match ``schema`` (empty: it matches)."""
    if isinstance(schema, tuple):  # one of several
        found = [problems(value, option, where) for option in schema]
        return [] if any(not f for f in found) else found[0]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where or 'the file'} should be an object, not {_kind(value)}"]
        out: list[str] = []
        for key, sub in schema.items():
            optional = isinstance(sub, Opt)
            if key not in value:
                if not optional:
                    out.append(f"{_join(where, key)} is missing")
                continue
            out += problems(value[key], sub.schema if optional else sub, _join(where, key))
        return out
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return [f"{where} should be a list, not {_kind(value)}"]
        return [p for i, item in enumerate(value) for p in problems(item, schema.schema, f"{where}[{i}]")][:3]
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            return [f"{where} should be an object, not {_kind(value)}"]
        return [p for key, item in value.items() for p in problems(item, schema.schema, _join(where, str(key)))][:3]
    if schema is NUM:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not (
            isinstance(value, float) and math.isinf(value))
        return [] if ok else [f"{where} should be a number, not {_kind(value)}"]
    if schema is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where} should be an integer, not {_kind(value)}"]
    if schema is ANY or isinstance(value, schema):
        return []
    return [f"{where} should be {_NAMES.get(schema, schema.__name__)}, not {_kind(value)}"]


_NAMES = {str: "a string", bool: "true or false", dict: "an object", list: "a list", NONE: "null"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return f"the string {value[:20]!r}"
    return {dict: "an object", list: "a list", int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class Result(dict):
    """A checked result.json: the parsed JSON (read it as a dict) plus typed access to its identity."""

    @property
    def run_id(self) -> str:
        return self["run_id"]

    @property
    def method(self) -> str:
        return self["method"]

    @property
    def dataset(self) -> str:
        return self["dataset"]

    @property
    def dataset_plugin(self) -> str:
        """The dataset plugin the run's dataset is an instance of (results before instances: the dataset itself)."""
        return self.get("dataset_plugin") or self["dataset"]

    @property
    def seed(self) -> int:
        return self["seed"]

    @property
    def finished(self) -> float:
        """When the run finished (epoch seconds; 0 for results that did not record it)."""
        return float(self.get("finished") or 0.0)


def parse_result(value: Any, where: str = "result.json") -> Result:
    """``value`` (parsed JSON) as a :class:`Result`, or a :class:`DamagedResult` naming the first bad field."""
    found = problems(value, RESULT_SCHEMA)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DamagedResult(f"{where} is not a complete result: {found[0]}{more}.")
    return Result(value)


def read_result(path: Path) -> Result:
    """The checked result.json at ``path``; a :class:`DamagedResult` when it is unreadable or malformed."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DamagedResult(f"{path} cannot be read as JSON ({type(err).__name__}).") from None
    return parse_result(value, str(path))


def is_result(value: Any) -> bool:
    """Whether parsed JSON is a complete result (what makes a run count as done)."""
    return not problems(value, RESULT_SCHEMA)


def parse_metrics(text: str) -> tuple[list[dict[str, Any]], int]:
    """The epoch records of a metrics.jsonl text and how many lines were skipped as damaged.

    A torn last line (a write cut by a crash), a ``null`` or any line without the types of an
    epoch record is skipped; the rest of the history stays usable.
    """
    records: list[dict[str, Any]] = []
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if problems(record, METRICS_SCHEMA):
            skipped += 1
            continue
        records.append(record)
    return records, skipped
