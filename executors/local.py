"""Built-in executor plugin ``local``: worker processes on this machine (:mod:`nlbench.sweep.local`).

Loaded by path like the built-in methods and datasets, and registered through the same
``register_executors`` hook as a site's own executor, so the plugin manager names no stage above it.
"""

from __future__ import annotations

from typing import Any

import nlbench
from nlbench.sweep.local import LocalExecutor


@nlbench.hookimpl
def register_executors(register: Any) -> None:
    register(LocalExecutor)
