"""Built-in executor plugins ``slurm`` and ``submitit-local``: submitit job arrays (:mod:`nlbench.sweep.slurm`).

Loaded by path like the built-in methods and datasets, and registered through the same
``register_executors`` hook as a site's own executor.
"""

from __future__ import annotations

from typing import Any

import nlbench
from nlbench.sweep.slurm import SubmititExecutor, SubmititLocalExecutor


@nlbench.hookimpl
def register_executors(register: Any) -> None:
    register(SubmititExecutor)
    register(SubmititLocalExecutor)
