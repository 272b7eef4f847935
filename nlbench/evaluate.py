"""Test-set evaluation: accuracy of every member a method exposes, confusion matrices at the end."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nlbench.augment import Augmenter
from nlbench.context import Context
from nlbench.method import Method, Phase


@torch.no_grad()
def predict_split(
    method: Method, phase: Phase, images: torch.Tensor, augmenter: Augmenter, ctx: Context, batch_size: int
) -> dict[str, torch.Tensor]:
    """Predicted class of every test image for every member (tensors stay on the device)."""
    for module in method.modules():
        module.eval()
    predictions: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(ctx.device, non_blocking=True)
        x = augmenter.test(chunk)
        with ctx.autocast():
            scores = method.predict_members(x, phase)
        for name, value in scores.items():
            predictions.setdefault(name, []).append(value.argmax(dim=1))
    return {name: torch.cat(parts) for name, parts in predictions.items()}


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
