"""What a test split gives for free: the majority-class and chance scores, and models that answer one class.

A number means little without the score of a model that learned nothing. From the confusion
matrix every result stores (rows: true class, columns: predicted; the last epoch's model) this
module derives, per test split:

* the *majority-class* score: always answering the test split's most common class;
* the *chance* score: answering uniformly at random (expected value).

Accuracy: majority = that class's share, chance = 1/K. Balanced accuracy: both are 1/K (any
constant or random answer recalls 1/K on average). Macro-F1: majority = 2p/(1+p)/K for the
majority share p; chance = the mean over classes of 2 p_k (1/K) / (p_k + 1/K). ECE has none.

And it flags a model that answers one class for most of the test set: more than half of its
predictions are one class, and at least 1.5 times that class's share of the test labels (a
model on a test set that is 80% one class may rightly answer it 80% of the time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: A model is flagged when one class takes more than this share of its predictions...
DOMINANT_SHARE = 0.5
#: ...and at least this many times that class's share of the test labels.
DOMINANT_RATIO = 1.5


@dataclass(frozen=True)
class SplitReference:
    """The reference scores of one test split (percent)."""

    size: int
    counts: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def majority_class(self) -> str:
        return self.class_names[int(np.argmax(self.counts))]

    def majority(self, score: str = "accuracy") -> float | None:
        """The score of always answering the most common class."""
        k, p = len(self.counts), max(self.counts) / self.size
        return {"accuracy": 100.0 * p, "balanced_accuracy": 100.0 / k,
                "macro_f1": 100.0 * 2 * p / (1 + p) / k}.get(score)

    def chance(self, score: str = "accuracy") -> float | None:
        """The expected score of answering uniformly at random."""
        k = len(self.counts)
        shares = np.asarray(self.counts, dtype=np.float64) / self.size
        f1 = np.where(shares > 0, 2 * shares / k / np.maximum(shares + 1 / k, 1e-12), 0.0)
        return {"accuracy": 100.0 / k, "balanced_accuracy": 100.0 / k, "macro_f1": float(100.0 * f1.mean())}.get(score)

    def describe(self, score: str = "accuracy") -> str:
        """``majority class 'neutral' 50.15, chance 14.29 (7 classes, 1,204 faces)``."""
        majority, chance = self.majority(score), self.chance(score)
        if majority is None or chance is None:
            return f"{len(self.counts)} classes, {self.size:,} test samples"
        return (f"majority class {self.majority_class!r} {majority:.2f}, chance {chance:.2f} "
                f"({len(self.counts)} classes, {self.size:,} test samples)")


def _report(result: Any, member: str = "model") -> dict[str, Any] | None:
    final = result.get("final") or {}
    report = final.get("model") if member == "model" else (final.get("members") or {}).get(member)
    if not isinstance(report, dict) or not report.get("confusion_matrix"):
        return None
    return report


def split_reference(result: Any) -> SplitReference | None:
    """The reference scores of the test split a run was evaluated on (None: no confusion matrix)."""
    report = _report(result)
    if report is None:
        return None
    matrix = np.asarray(report["confusion_matrix"], dtype=np.int64)
    counts = tuple(int(c) for c in matrix.sum(axis=1))
    if sum(counts) == 0:
        return None
    names = tuple(report.get("class_names") or [str(i) for i in range(len(counts))])
    return SplitReference(sum(counts), counts, names)


@dataclass(frozen=True)
class Dominant:
    """A model that answers one class for most of the test set."""

    class_name: str
    share: float  # of the predictions
    label_share: float  # of the test labels

    def describe(self) -> str:
        return (f"answers {self.class_name!r} for {100 * self.share:.0f}% of the test samples "
                f"({100 * self.label_share:.0f}% of the test labels)")


def dominant_prediction(result: Any, member: str = "model") -> Dominant | None:
    """The class a model answers for most of the test set, if it does (see the module docstring)."""
    report = _report(result, member)
    if report is None:
        return None
    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)
    total = matrix.sum()
    if total <= 0:
        return None
    predicted, labelled = matrix.sum(axis=0) / total, matrix.sum(axis=1) / total
    top = int(np.argmax(predicted))
    if predicted[top] > DOMINANT_SHARE and predicted[top] >= DOMINANT_RATIO * labelled[top]:
        names = report.get("class_names") or [str(i) for i in range(matrix.shape[0])]
        return Dominant(str(names[top]), float(predicted[top]), float(labelled[top]))
    return None


def fold_of(result: Any) -> tuple[int, int] | None:
    """(fold, folds) of a k-fold cross-validation run (dataset options ``fold`` and ``folds``), else None."""
    options = result.get("dataset_options") or {}
    folds = options.get("folds")
    if isinstance(folds, int) and not isinstance(folds, bool) and folds > 0:
        return int(options.get("fold", 1)), folds
    return None


def split_key(result: Any) -> str:
    """What identifies the test split a run was evaluated on: runs with other keys never share a column.

    Results that record ``test_split`` (nlbench 0.5 on) are keyed by the digest of its samples'
    names and labels; older ones by the test size and per-class counts of their confusion matrix
    (runs on another draw of the same sizes are then told apart by their variant label only). The
    folds of one k-fold protocol share a key: together they test every sample once.
    """
    import hashlib
    import json

    folded = fold_of(result)
    if folded is not None:
        options = {k: v for k, v in (result.get("dataset_options") or {}).items() if k != "fold"}
        what = [result.get("dataset_version"), options, result.get("data_fingerprint")]
        return "folds:" + hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
    recorded = (result.get("test_split") or {}).get("sha256")
    if recorded:
        return str(recorded)
    reference = split_reference(result)
    if reference is None:
        return f"size:{result.get('test_size')}"
    return f"counts:{','.join(map(str, reference.counts))}:{','.join(reference.class_names)}"
