"""The pluggy hooks through which built-in and third-party plugins register methods and datasets.

A plugin module implements any of these with ``@nlbench.hookimpl``::

    @nlbench.hookimpl
    def register_methods(register):
        register(MyMethod)

``register`` takes a :class:`nlbench.Method` or :class:`nlbench.Dataset` subclass (an executor
or a logger class for the hooks of those); the plugin manager records which plugin (and package
version) registered it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "nlbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_methods(register: Callable[[type], None]) -> None:
    """Register training methods: call ``register(MethodSubclass)`` once per method."""


@hookspec
def register_datasets(register: Callable[[type], None]) -> None:
    """Register datasets: call ``register(DatasetSubclass)`` once per dataset."""


@hookspec
def register_executors(register: Callable[[type], None]) -> None:
    """Register sweep executors: call ``register(ExecutorSubclass)`` (see :mod:`nlbench.executors`)."""


@hookspec
def register_loggers(register: Callable[[type], None]) -> None:
    """Register run loggers: call ``register(LoggerSubclass)`` (see :mod:`nlbench.loggers`).

    A logger is chosen per command (``--logger NAME``); its instance then implements the
    observer hooks below.
    """


@hookspec
def on_run_start(run: Any) -> None:
    """Observe a run that starts or resumes (``run`` is the :class:`nlbench.store.RunDir`)."""


@hookspec
def on_epoch_end(run: Any, record: dict) -> None:
    """Observe one finished epoch; ``record`` is the line written to metrics.jsonl."""


@hookspec
def on_run_end(run: Any, result: dict | None, error: BaseException | None) -> None:
    """Observe the end of a run: its result when done, or the error that stopped it."""
