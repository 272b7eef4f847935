"""Deprecated path of :mod:`nlbench.lib.synthface`, kept for one release: import from there."""

from __future__ import annotations

from typing import Any

from nlbench._lazy import deprecated_module

__getattr__: Any = deprecated_module(__name__, "nlbench.lib.synthface")
