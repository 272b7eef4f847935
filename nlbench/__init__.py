"""nlbench: a plug-in benchmark of noisy-label training methods for facial expression recognition."""

from __future__ import annotations

__version__ = "0.1.0"

from nlbench.dataset import Dataset, SampleTable  # noqa: E402
from nlbench.errors import ConfigError, DataError, NlbenchError, UsageError  # noqa: E402
from nlbench.hookspecs import hookimpl  # noqa: E402
from nlbench.method import Batch, Method, Phase  # noqa: E402

__all__ = [
    "Batch",
    "ConfigError",
    "DataError",
    "Dataset",
    "Method",
    "NlbenchError",
    "Phase",
    "SampleTable",
    "UsageError",
    "__version__",
    "hookimpl",
]
