"""Summaries of a run's per-epoch test accuracies: last, mean of the last k, best (with its epoch)."""

from __future__ import annotations

from typing import Any

import numpy as np


def summarise_curve(values: list[float], k: int) -> dict[str, Any]:
    """last / lastk / best of one accuracy curve (percent); best is selected on the test set."""
    array = np.asarray(values, dtype=np.float64)
    best = int(np.argmax(array))
    k = min(k, len(array))
    return {
        "last": float(array[-1]),
        "lastk": float(array[-k:].mean()),
        "k": k,
        "best": float(array[best]),
        "best_epoch": best + 1,
        "curve": [round(float(v), 4) for v in array],
    }


def summarise_history(history: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Per-member summaries (keyed ``phase/member``) and ``model``: the deployable of the last phase."""
    curves: dict[str, list[float]] = {}
    for record in history:
        for member, acc in record["test"].items():
            curves.setdefault(f"{record['phase']}/{member}", []).append(acc)
    members = {name: summarise_curve(curve, k) for name, curve in curves.items()}
    last_phase = history[-1]["phase"] if history else None
    return {"model": members.get(f"{last_phase}/model"), "members": members}
