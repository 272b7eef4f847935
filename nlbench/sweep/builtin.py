"""The built-in executors, registered through the ``register_executors`` hook like a site's own."""

from __future__ import annotations

from typing import Any

from nlbench.hookspecs import hookimpl
from nlbench.sweep.local import LocalExecutor
from nlbench.sweep.slurm import SubmititExecutor, SubmititLocalExecutor


@hookimpl
def register_executors(register: Any) -> None:
    """The built-in executors: local, slurm and submitit-local."""
    register(LocalExecutor)
    register(SubmititExecutor)
    register(SubmititLocalExecutor)
