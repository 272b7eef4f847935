"""Hyperparameter tuning: the search spaces the methods declare (:mod:`nlbench.tune.space`).

``nlbench tune`` will search these spaces with Optuna, with an equal budget per method and the
noisy validation split as the selection criterion; this package holds what it searches: each
method's space, the shared pipeline knobs, and the overrides of benchmark.toml's ``[tune]`` table.
"""

from __future__ import annotations

from nlbench.tune.space import (
    Dimension,
    check_overrides,
    method_space,
    search_space,
    set_items,
    shared_space,
    suggest,
)

__all__ = ["Dimension", "check_overrides", "method_space", "search_space", "set_items", "shared_space", "suggest"]
