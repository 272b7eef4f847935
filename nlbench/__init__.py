"""nlbench: a plug-in benchmark of noisy-label training methods for facial expression recognition.

Plugin authors import what they need from here (``nlbench.Method``, ``nlbench.Dataset``,
``nlbench.hookimpl``, ...). The classes are loaded on first use, so ``import nlbench`` (and with
it ``nlbench --help``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.5.0"

from nlbench.errors import ConfigError, DataError, NlbenchError, UsageError  # noqa: E402
from nlbench.hookspecs import hookimpl  # noqa: E402

#: Public names loaded lazily: name -> module.
_LAZY = {
    "Batch": "nlbench.method",
    "Method": "nlbench.method",
    "Phase": "nlbench.method",
    "Segment": "nlbench.method",
    "Dataset": "nlbench.dataset",
    "SampleTable": "nlbench.dataset",
    "SampleState": "nlbench.context",
    "Range": "nlbench.options",
    "runtime": "nlbench.options",
}

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.context import SampleState
    from nlbench.dataset import Dataset, SampleTable
    from nlbench.method import Batch, Method, Phase, Segment
    from nlbench.options import Range, runtime


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nlbench' has no attribute {name!r}")


__all__ = [
    "Batch",
    "ConfigError",
    "DataError",
    "Dataset",
    "Method",
    "NlbenchError",
    "Phase",
    "Range",
    "SampleState",
    "SampleTable",
    "Segment",
    "UsageError",
    "__version__",
    "hookimpl",
    "runtime",
]
