"""Stage 1 of a run: benchmark.toml and the command's flags become one frozen :class:`RunSpec`.

- :mod:`nlbench.spec.config`: reads benchmark.toml and ``--set`` items;
- :mod:`nlbench.spec.runspec`: what a run *is* (``RunSpec``, its run id and spec.json);
- :mod:`nlbench.spec.resolve`: how a request *becomes* a spec (the one precedence rule).

The public names stay importable from ``nlbench.spec`` and load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlbench._lazy import lazy_attributes

_RUNSPEC = ("OMIT_NONE", "FrozenMap", "NoiseSpec", "DataSpec", "RunSpec")
_RESOLVE = ("RunRequest", "split_sets", "resolve_spec", "dataset_noise_rate", "method_settings", "build_hparams",
            "resolve_train_settings", "check_plugin_tables")
__getattr__ = lazy_attributes(__name__, {**{n: "nlbench.spec.runspec" for n in _RUNSPEC},
                                         **{n: "nlbench.spec.resolve" for n in _RESOLVE}})
__all__ = ["OMIT_NONE", "DataSpec", "FrozenMap", "NoiseSpec", "RunRequest", "RunSpec", "build_hparams",
           "check_plugin_tables", "dataset_noise_rate", "method_settings", "resolve_spec", "resolve_train_settings",
           "split_sets"]

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.spec.resolve import (
        RunRequest,
        build_hparams,
        check_plugin_tables,
        dataset_noise_rate,
        method_settings,
        resolve_spec,
        resolve_train_settings,
        split_sets,
    )
    from nlbench.spec.runspec import OMIT_NONE, DataSpec, FrozenMap, NoiseSpec, RunSpec
