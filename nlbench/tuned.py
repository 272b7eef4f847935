"""The stored outcome of ``nlbench tune``: one record per tuned method, read by tables and the report.

``nlbench tune`` writes each method's outcome (its budget, chosen values, noisy-validation
score, and the test accuracy of its default and chosen configurations per evaluation seed) as
JSON under ``<runs>/tune/outcomes/``, beside the context it was tuned in (dataset, noise, budget,
sampler, seeds). ``nlbench table --tuned`` and ``nlbench report`` read them back from here, so
neither needs the tuning code (nor Optuna) to show what tuning found.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where ``nlbench tune`` stores each method's outcome, under the runs folder.
OUTCOMES = Path("tune") / "outcomes"


@dataclass
class MethodOutcome:
    """One method after tuning: its budget, its chosen values, and both configurations' test accuracy."""

    method: str
    study: str
    trials: int
    failed: int
    spent: float
    #: Trials stopped by the pruner, and the compute (budget units' network-epochs) that saved.
    pruned: int = 0
    saved: float = 0.0
    chosen: dict[str, Any] | None = None
    #: Mean noisy-validation accuracy (%) of the chosen trial over the tuning seeds.
    val: float | None = None
    #: Test accuracy (%, last epoch, deployable model) per evaluation seed: default and chosen configuration.
    default: dict[int, float] = field(default_factory=dict)
    tuned: dict[int, float] = field(default_factory=dict)
    #: Whether the chosen configuration is the default one (the study's first trial).
    chosen_is_default: bool = False


def describe_point(values: dict[str, Any]) -> str:
    """A drawn point as one short line, options by name, floats to 3 digits: ``q=0.726, weight_decay=0``."""
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={f'{value:.3g}' if isinstance(value, float) else value}"
                     for key, value in values.items())


def store_outcomes(folder: Path, outcomes: list[MethodOutcome], context: dict[str, Any]) -> None:
    """Each method's outcome as JSON in the store (replaced by a later tune of the same study)."""
    from nlbench.fileio import atomic_write_json

    for outcome in outcomes:
        (folder / OUTCOMES).mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / OUTCOMES / f"{outcome.study}.json",
                          {"outcome": dataclasses.asdict(outcome), "context": context})


def load_outcomes(folder: Path, methods: list[str] | None = None
                  ) -> list[tuple[dict[str, Any], list[MethodOutcome]]]:
    """The stored outcomes of a store, grouped by how they were tuned: (context, outcomes)."""
    from nlbench.catalogue import method_order_key
    from nlbench.fileio import read_json_or_none

    groups: dict[str, tuple[dict[str, Any], list[MethodOutcome]]] = {}
    for path in sorted((folder / OUTCOMES).glob("*.json")):
        data = read_json_or_none(path)
        if not isinstance(data, dict) or not isinstance(data.get("outcome"), dict):
            continue  # a damaged file: the study itself is in the journal, `tune` writes it again
        fields = dict(data["outcome"])
        try:
            for key in ("default", "tuned"):  # JSON object keys are strings; seeds are ints
                fields[key] = {int(seed): float(value) for seed, value in (fields.get(key) or {}).items()}
            outcome = MethodOutcome(**fields)
        except (TypeError, ValueError):
            continue
        if methods and outcome.method not in methods:
            continue
        context = data.get("context") if isinstance(data.get("context"), dict) else {}
        groups.setdefault(json.dumps(context, sort_keys=True), (context, []))[1].append(outcome)
    for _, outcomes in groups.values():
        outcomes.sort(key=lambda outcome: method_order_key(outcome.method))  # the tables' order, not the files'
    return list(groups.values())
