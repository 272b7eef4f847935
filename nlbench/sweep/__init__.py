"""Stage 4a: grids of runs, and where their runs train.

- :mod:`nlbench.sweep.grid`: a grid expanded into run specs, its states from the store;
- :mod:`nlbench.sweep.worker`: the body every executor runs for one run (:func:`train_one`);
- :mod:`nlbench.sweep.local`, :mod:`nlbench.sweep.slurm`: the built-in executors, registered by
  the built-in plugin folder ``executors/`` through the same hook as a site's own.

The contract an executor plugin implements is :mod:`nlbench.executors`. The grid's public names
stay importable from ``nlbench.sweep`` and load on first use.
"""

from __future__ import annotations

from nlbench._lazy import lazy_attributes

_GRID = ("PRESET_KEYS", "expand_methods", "SweepRequest", "GridRun", "split_list", "set_axes",
         "apply_preset", "expand", "grid_runs", "count_states", "parse_data_roots", "describe")
__getattr__ = lazy_attributes(__name__, {name: "nlbench.sweep.grid" for name in _GRID})
__all__ = list(_GRID)
