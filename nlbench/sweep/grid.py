"""A sweep: a grid of runs expanded into run specs, whose states come from the store alone.

A grid is the cross product of methods x datasets x noise rates x noise modes x seeds x every
``--set key=a,b,c`` axis. Each cell is resolved exactly like ``nlbench run`` resolves one run
(:func:`nlbench.spec.resolve_spec`), so a sweep's run is the run a user would get by hand, with
the same id: running the sweep again skips what is done and resumes what was interrupted.
Named grids live in benchmark.toml as ``[sweeps.<name>]`` with the keys of :data:`PRESET_KEYS`;
command-line values replace a preset's.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlbench.catalogue import METHOD_GROUPS
from nlbench.errors import ConfigError, UsageError
from nlbench.spec.resolve import RunRequest, resolve_spec
from nlbench.spec.runspec import RunSpec
from nlbench.store import STATES, RunDir, RunState, run_dir_name

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.dataset import Dataset
    from nlbench.registry import Registry
    from nlbench.spec.config import Config

#: Keys of a ``[sweeps.<name>]`` table and the type of each.
PRESET_KEYS = {
    "description": str, "methods": list, "datasets": list, "noise": list, "noise_modes": list, "seeds": list,
    "set": list, "epochs": int, "noise_source": str,
}


def expand_methods(names: list[str]) -> list[str]:
    """``names`` with the groups of :data:`nlbench.catalogue.METHOD_GROUPS` written out, in table order, each method once.

    ``all`` (or ``paper``) is the paper's seven, ``modern`` is EAC and RUL; items may be joined with
    "+", e.g. ``all+modern`` or ``standard+modern``.
    """
    out: list[str] = []
    for item in names:
        for part in (p.strip() for p in item.split("+")):
            if not part:
                raise UsageError(f"--methods item {item!r} has an empty part; write e.g. all+modern.")
            for name in METHOD_GROUPS.get(part, (part,)):
                if name not in out:
                    out.append(name)
    return out


@dataclass
class SweepRequest:
    """The axes of a grid (empty lists: the configured default of ``nlbench run``)."""

    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    noise_modes: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    #: Raw ``--set`` items; ``key=a,b`` is an axis of the grid.
    sets: list[str] = field(default_factory=list)
    #: Data root per dataset ("" = every dataset of the grid).
    data_roots: dict[str, str] = field(default_factory=dict)
    epochs: int | None = None
    noise_source: str | None = None
    pretrained: str | None = None
    device: str | None = None
    cache_dir: str | None = None
    #: A noise file every run of the grid trains on (the noise axes are then unused).
    noise_file: str | None = None
    noise_file_base: int | None = None


@dataclass
class GridRun:
    """One run of a sweep: its spec, its folder and its state in the store."""

    spec: RunSpec
    run_dir: RunDir
    state: RunState


def split_list(text: str) -> list[str]:
    """``a,b,c`` -> its items, with commas inside brackets or quotes kept (TOML lists, strings)."""
    items, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        current += char
    items.append(current.strip())
    return [item for item in items if item]


def set_axes(sets: list[str]) -> list[list[str]]:
    """Every combination of the ``--set`` axes, as lists of plain ``key=value`` items."""
    axes = []
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. methods.cct.lambda_max=0.8), got {item!r}.")
        key, values = item.split("=", 1)
        axes.append([f"{key}={value}" for value in split_list(values)] or [item])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def apply_preset(request: SweepRequest, config: Config, name: str) -> SweepRequest:
    """``request`` with the gaps filled from ``[sweeps.<name>]`` (command-line values win)."""
    if name not in config.sweeps:
        known = ", ".join(sorted(config.sweeps)) or "(none)"
        raise UsageError(f"no sweep preset {name!r} in {config.source or 'the configuration'}; known: {known}.")
    preset = config.sweeps[name]
    for key, value in preset.items():
        if key not in PRESET_KEYS:
            raise ConfigError(f"unknown key sweeps.{name}.{key}; known keys: {', '.join(sorted(PRESET_KEYS))}.")
        if not isinstance(value, PRESET_KEYS[key]) or isinstance(value, bool):
            raise ConfigError(f"sweeps.{name}.{key} must be a {PRESET_KEYS[key].__name__}, got {value!r}.")
    merged = SweepRequest(**{**request.__dict__})
    for axis in ("methods", "datasets", "noise", "noise_modes", "seeds"):
        if not getattr(merged, axis) and axis in preset:
            setattr(merged, axis, list(preset[axis]))
    merged.sets = [*map(str, preset.get("set", [])), *request.sets]  # later items win
    if merged.epochs is None:
        merged.epochs = preset.get("epochs")
    if merged.noise_source is None:
        merged.noise_source = preset.get("noise_source")
    return merged


def expand(request: SweepRequest, config: Config, registry: Registry) -> list[RunSpec]:
    """The specs of every cell of the grid, in grid order, each run once."""
    datasets: dict[tuple, Dataset] = {}  # open each dataset once for the whole grid
    specs: dict[str, RunSpec] = {}
    axes = itertools.product(request.datasets or [None], expand_methods(request.methods) or [None],
                             request.noise_modes or [None],
                             request.noise or [None], set_axes(request.sets), request.seeds or [None])
    for dataset, method, mode, rate, sets, seed in axes:
        root = request.data_roots.get(dataset or "", request.data_roots.get(""))
        spec = resolve_spec(RunRequest(
            method=method, dataset=dataset, noise=rate, noise_mode=mode, noise_source=request.noise_source,
            seed=seed, epochs=request.epochs, data_root=root, pretrained=request.pretrained,
            device=request.device, cache_dir=request.cache_dir, noise_file=request.noise_file,
            noise_file_base=request.noise_file_base, sets=sets,
        ), config, registry, datasets)
        specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def grid_runs(specs: list[RunSpec], runs_dir: Path) -> list[GridRun]:
    """Each spec with its run folder and its state in the store."""
    runs = []
    for spec in specs:
        run_dir = RunDir(Path(runs_dir) / run_dir_name(spec))
        runs.append(GridRun(spec, run_dir, run_dir.state()))
    return runs


def count_states(runs: list[GridRun]) -> dict[str, int]:
    """How many runs are in each state (every state listed, zeros included)."""
    counts = Counter(run.state.state for run in runs)
    return {state: counts.get(state, 0) for state in STATES}


def parse_data_roots(items: list[str]) -> dict[str, str]:
    """``--data-root PATH`` (every dataset) or ``--data-root NAME=PATH`` (one dataset, a plugin or a
    configured instance, whose name may hold hyphens), repeatable."""
    roots: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if sep and name.replace("-", "_").isidentifier() and not Path(item).exists():
            roots[name] = path
        else:
            roots[""] = item
    return roots


def describe(spec: RunSpec) -> dict[str, Any]:
    """The identity columns of a run for listings: method, dataset, noise, seed, run id."""
    noise = "real" if spec.noise.source == "dataset" else f"{spec.noise.rate:g} {spec.noise.mode}"
    return {"method": spec.method, "dataset": spec.data.name, "noise": noise, "seed": spec.seed,
            "run_id": spec.run_id}
