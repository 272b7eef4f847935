"""Summaries of a run's per-epoch evaluations: last, mean of the last k, val-selected, best.

``val`` is the honest model-selection metric: the test accuracy of the epoch whose accuracy on the
held-out noisy validation split (:mod:`nlbench.data.validation`) is highest (the first such epoch).
``best`` selects the epoch on the test set itself: an oracle, reported because papers do, and
always labelled as such.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The selection rules a table can report.
SELECTIONS = ("last", "lastk", "val", "best")
#: Per-epoch test scores besides accuracy (:func:`nlbench.train.evaluate.scores`).
SCORES = ("balanced_accuracy", "macro_f1", "ece")


def summarise_curve(values: list[float], k: int, val: list[float] | None = None) -> dict[str, Any]:
    """last / lastk / best (and val, given the validation curve) of one test-accuracy curve (percent)."""
    array = np.asarray(values, dtype=np.float64)
    best = int(np.argmax(array))
    k = min(k, len(array))
    summary: dict[str, Any] = {
        "last": float(array[-1]),
        "lastk": float(array[-k:].mean()),
        "k": k,
        "best": float(array[best]),
        "best_epoch": best + 1,
        "curve": [round(float(v), 4) for v in array],
    }
    if val is not None and len(val) == len(array):
        chosen = int(np.argmax(np.asarray(val, dtype=np.float64)))  # the first maximum
        summary.update({"val": float(array[chosen]), "val_epoch": chosen + 1,
                        "val_curve": [round(float(v), 4) for v in val]})
    return summary


def selected_epochs(summary: dict[str, Any]) -> dict[str, list[int]]:
    """The 0-based epochs each selection rule averages over (for scores besides accuracy)."""
    n = len(summary["curve"])
    epochs = {"last": [n - 1], "lastk": list(range(n - summary["k"], n)), "best": [summary["best_epoch"] - 1]}
    if "val_epoch" in summary:
        epochs["val"] = [summary["val_epoch"] - 1]
    return epochs


def summarise_history(history: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Per-member summaries (keyed ``phase/member``) and ``model``: the deployable of the last phase.

    Each member also gets ``scores``: balanced accuracy, macro-F1 and ECE under every selection
    rule (the mean over the rule's epochs), where the history recorded them.
    """
    curves: dict[str, list[float]] = {}
    val_curves: dict[str, list[float]] = {}
    score_curves: dict[str, list[dict[str, Any]]] = {}
    for record in history:
        for member, acc in record["test"].items():
            key = f"{record['phase']}/{member}"
            curves.setdefault(key, []).append(acc)
            if "val" in record and member in record["val"]:
                val_curves.setdefault(key, []).append(record["val"][member])
            score_curves.setdefault(key, []).append(record.get("test_scores", {}).get(member, {}))
    members = {}
    for name, curve in curves.items():
        summary = summarise_curve(curve, k, val_curves.get(name))
        per_epoch = score_curves[name]
        summary["scores"] = {
            rule: {score: _mean([per_epoch[e].get(score) for e in epochs]) for score in SCORES}
            for rule, epochs in selected_epochs(summary).items()
        }
        members[name] = summary
    last_phase = history[-1]["phase"] if history else None
    return {"model": members.get(f"{last_phase}/model"), "members": members}


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present and len(present) == len(values) else None
