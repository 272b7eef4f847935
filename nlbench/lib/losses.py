"""Loss terms shared by several methods, written from the equations of docs/methods.md.

All functions take logits (any float dtype; computed in float32) and return batch means unless
their name says otherwise. KL(q || p) = sum_c q_c (log q_c - log p_c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_divergence(target_logits: Tensor, input_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Batch mean of KL(softmax(target/T) || softmax(input/T)); gradients flow into both sides."""
    return kl_divergence_per_sample(target_logits, input_logits, temperature).mean()


def kl_divergence_per_sample(target_logits: Tensor, input_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample KL(softmax(target/T) || softmax(input/T)), shape B."""
    log_q = F.log_softmax(target_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(input_logits.float() / temperature, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1)


def soft_cross_entropy(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Batch mean of CE(softmax(teacher/T), softmax(student/T)) = -sum_c q_c log p_c."""
    q = F.softmax(teacher_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return -(q * log_p).sum(dim=1).mean()


def cross_entropy_per_sample(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample CE(z, y) = -log softmax(z)_y, shape B."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def mean_softmax(logits: list[Tensor]) -> Tensor:
    """Average of the networks' softmax outputs (the ensemble of CCT, Co-teaching, JoCoR)."""
    return torch.stack([F.softmax(z.float(), dim=1) for z in logits]).mean(dim=0)
