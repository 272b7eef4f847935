"""Test-set evaluation: accuracy of every member a method exposes, confusion matrices at the end."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nlbench.context import Context
from nlbench.data.augment import Augmenter
from nlbench.errors import RunFailed
from nlbench.method import Method, Phase
from nlbench.train.epoch import describe_method

ECE_BINS = 15


@torch.no_grad()
def predict_split(
    method: Method, phase: Phase, images: torch.Tensor, augmenter: Augmenter, ctx: Context, batch_size: int
) -> dict[str, torch.Tensor]:
    """Predicted class of every image for every member (tensors stay on the device)."""
    return predict_with_confidence(method, phase, images, augmenter, ctx, batch_size)[0]


@torch.no_grad()
def predict_with_confidence(
    method: Method, phase: Phase, images: torch.Tensor, augmenter: Augmenter, ctx: Context, batch_size: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Predicted class and its probability (the confidence, for calibration) of every image and member."""
    for module in method.modules():
        module.eval()
    predictions: dict[str, list[torch.Tensor]] = {}
    confidences: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(ctx.device, non_blocking=True)
        x = augmenter.test(chunk)
        with ctx.autocast():
            try:
                members = method.predict_members(x, phase)
            except (KeyboardInterrupt, RunFailed):
                raise
            except (Exception, SystemExit) as err:
                raise RunFailed(f"{describe_method(method)}: predict_members raised {type(err).__name__}: {err} "
                                f"(evaluating phase {phase.name})") from err
        check_members(method, members, x.shape[0], ctx.num_classes, phase)
        for name, value in members.items():
            top, cls = as_probabilities(value).max(dim=1)
            predictions.setdefault(name, []).append(cls)
            confidences.setdefault(name, []).append(top)
    return ({name: torch.cat(parts) for name, parts in predictions.items()},
            {name: torch.cat(parts) for name, parts in confidences.items()})


def check_members(method: Method, members: Any, batch: int, num_classes: int, phase: Phase) -> None:
    """``predict_members`` must give {name: B x C tensor of finite scores} with a ``model`` entry; say
    which rule it broke. Non-finite scores fail the run as a non-finite loss does: an argmax over NaN
    is class 0, and would be stored as an accuracy."""
    problem = None
    if not isinstance(members, dict) or "model" not in members:
        problem = f"must return a dict with a 'model' entry, got {type(members).__name__}"
    else:
        for name, value in members.items():
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch, num_classes):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                problem = f"member {name!r} must be a {batch} x {num_classes} tensor of scores, got {shape}"
                break
            bad = int((~torch.isfinite(value.float())).any(dim=1).sum())
            if bad:
                problem = (f"gave non-finite scores (NaN or inf) for member {name!r} on {bad} of {batch} images: "
                           f"the network diverged (try a lower learning rate)")
                break
    if problem:
        raise RunFailed(f"{describe_method(method)}: predict_members {problem} (evaluating phase {phase.name})")


def as_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Class probabilities from a member's scores: kept when they already are (an ensemble's mean
    softmax: non-negative rows summing to 1), else the softmax of the logits."""
    scores = scores.float()
    if bool((scores >= 0).all()) and torch.allclose(scores.sum(dim=1), torch.ones(1, device=scores.device), atol=1e-4):
        return scores
    return torch.softmax(scores, dim=1)


def scores(predictions: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int,
           confidences: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, float | None]]:
    """Balanced (mean-class) accuracy, macro-F1 (percent) and ECE (percent) of every member.

    Classes absent from ``labels`` are left out of both means; ECE needs ``confidences``.
    """
    out: dict[str, dict[str, float | None]] = {}
    for name, predicted in predictions.items():
        matrix = confusion(predicted, labels, num_classes).astype(np.float64)
        out[name] = class_scores(matrix)
        if confidences is not None and name in confidences:
            out[name]["ece"] = expected_calibration_error(confidences[name], predicted == labels)
    return out


def class_scores(matrix: np.ndarray) -> dict[str, float | None]:
    """Balanced accuracy and macro-F1 (percent) from a confusion matrix (rows true, columns predicted)."""
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    diagonal = np.diag(matrix)
    present = support > 0
    if not present.any():
        return {"balanced_accuracy": None, "macro_f1": None}
    recall = diagonal[present] / support[present]
    precision = np.divide(diagonal, predicted, out=np.zeros_like(diagonal), where=predicted > 0)[present]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(recall), where=denominator > 0)
    return {"balanced_accuracy": float(100 * recall.mean()), "macro_f1": float(100 * f1.mean())}


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE (percent): sum over equal-width confidence bins of |accuracy - mean confidence| x bin share."""
    confidence = confidence.float().clamp(0, 1)
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)  # bins (k/B, (k+1)/B]
    conf_sum = torch.bincount(index, weights=confidence, minlength=bins)
    correct_sum = torch.bincount(index, weights=correct.float(), minlength=bins)
    gap = (correct_sum - conf_sum).abs().sum() / max(1, confidence.numel())
    return float(100 * gap.cpu())


def accuracies(predictions: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy in percent per member (one device synchronisation for all)."""
    names = list(predictions)
    correct = torch.stack([(predictions[n] == labels).float().mean() for n in names]) * 100
    return dict(zip(names, correct.cpu().tolist()))


def confusion(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """K x K matrix of counts: rows are true classes, columns predicted ones."""
    flat = labels.long() * num_classes + predicted.long()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).cpu().numpy()


def per_class_report(matrix: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
    """Per-class accuracy (recall, in percent) from a confusion matrix; None for absent classes."""
    totals = matrix.sum(axis=1)
    per_class = {
        name: (float(100.0 * matrix[i, i] / totals[i]) if totals[i] else None) for i, name in enumerate(class_names)
    }
    return {"per_class_accuracy": per_class, "confusion_matrix": matrix.tolist(), "class_names": list(class_names)}
