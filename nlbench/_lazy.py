"""Lazy re-exports: a package names its public objects without importing their modules up front.

``import nlbench`` (and with it ``nlbench --help``) must not import torch, so a package facade
maps each public name to the module that defines it and imports that module on first use, as
``nlbench/__init__.py`` does for the plugin API.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps public name -> defining module."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    return __getattr__


def deprecated_module(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a moved module: every name of ``new``, with a DeprecationWarning."""
    import warnings

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):  # module machinery (__path__, __file__ probes): not a user's look-up
            raise AttributeError(name)
        warnings.warn(f"{old} moved to {new}; import {name} from there ({old} goes in the next release).",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new), name)

    return __getattr__
