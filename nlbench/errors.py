"""Error types that the CLI turns into one clear message and an exit code."""

from __future__ import annotations


class NlbenchError(Exception):
    """Base class of every error nlbench reports without a traceback."""

    exit_code = 2


class UsageError(NlbenchError):
    """Bad command-line input or configuration: what is wrong and what to do (exit 2)."""


class ConfigError(UsageError):
    """A malformed or inconsistent benchmark.toml, --set value or hyperparameter (exit 2)."""


class DataError(UsageError):
    """Missing or malformed dataset files: names the path and what was expected (exit 2)."""


class PluginError(UsageError):
    """A plugin registered something invalid, or two plugins claim the same name (exit 2)."""


class RunFailed(NlbenchError):
    """A run started but could not finish (NaN loss, crash inside a method) (exit 1)."""

    exit_code = 1


class StoppedWaiting(NlbenchError):
    """Ctrl-C (or SIGTERM) while waiting for cluster jobs that go on without the client (exit 130)."""

    exit_code = 130
    label = "interrupted"


class RunStopped(Exception):
    """A run stopped on purpose before its end by an observer (a tuner pruning a poor trial):
    left interrupted and resumable, reported as ``stopped``, never as failed."""
