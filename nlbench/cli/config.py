"""``nlbench config``: the fully resolved spec of a run, or of every run of a sweep, and where each value came from.

Nothing is trained. The output is TOML (``tomllib`` reads it back): each value of the run spec
(:meth:`nlbench.spec.RunSpec.to_json`) followed by a comment naming its source, as
:func:`nlbench.spec.resolve_spec` itself recorded it while applying the precedence (default,
``[train]``, dataset default, ``[datasets.X]``, ``[methods.Y]``, ``--set KEY``, a flag, a sweep
preset). With run's options it shows what ``nlbench run`` would train; with ``--sweep``,
``--preset`` or a sweep's list options (``--methods``, ``--datasets``, ``--seeds``,
``--noise-modes``, ``--noise 0,0.4``) every run ``nlbench sweep`` would train, ``--set k=a,b``
being an axis there as in ``sweep``.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path
from typing import Any, Optional

import typer

from nlbench.cli.common import ConfigOption, RunsDirOption, parse_numbers, split_items

#: The request fields a sweep preset can fill, by the flag resolve_spec names -> (the command
#: line's option, its flag in ``nlbench sweep``).
SWEEP_FLAGS = {"--method": ("methods", "--methods"), "--dataset": ("datasets", "--datasets"),
               "--noise": ("noise", "--noise"), "--noise-mode": ("noise_modes", "--noise-modes"),
               "--seed": ("seeds", "--seeds"), "--epochs": ("epochs", "--epochs"),
               "--noise-source": ("noise_source", "--noise-source")}
#: Widest ``key = value`` text a source comment is aligned after (longer ones get it right after them).
ALIGN = 32


def config(
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Method (see `nlbench methods`)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Sweep: comma-separated methods (all, modern, fer2023, lnl "
                                                                  "and + as in `nlbench sweep`)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset (see `nlbench datasets`)."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Sweep: comma-separated datasets."),
    noise: Optional[str] = typer.Option(None, "--noise", "-n", help="Noise rate; a comma-separated list is a sweep."),
    noise_mode: Optional[str] = typer.Option(None, "--noise-mode", help="Noise mode (see `nlbench run --help`)."),
    noise_modes: Optional[str] = typer.Option(None, "--noise-modes", help="Sweep: comma-separated noise modes."),
    noise_source: Optional[str] = typer.Option(None, "--noise-source", help="injected (default) or dataset."),
    noise_file: Optional[str] = typer.Option(None, "--noise-file", help="Train on the labels of a noise file."),
    noise_file_base: Optional[int] = typer.Option(None, "--noise-file-base", help="First class number of a list file."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Run seed."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Sweep: comma-separated seeds."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Training epochs."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    data_root: list[str] = typer.Option(
        [], "--data-root", help="Data folder (sweep: PATH for every dataset or NAME=PATH, repeatable)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="ResNet-18 checkpoint file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a setting, e.g. methods.cct.lambda_max=0.8 (sweep: key=a,b is an axis)."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Sweep: a named grid ([sweeps.NAME])."),
    sweep: bool = typer.Option(False, "--sweep", help="Resolve as `nlbench sweep` does: every run of the grid."),
    config: ConfigOption = None,
    runs: RunsDirOption = None,
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Decoded-image cache."),
) -> None:
    """Print the resolved spec of a run (or every run of a sweep) as TOML, each value with its source; train nothing."""
    from nlbench.cli.common import load, runs_dir
    from nlbench.errors import UsageError
    from nlbench.spec.resolve import RunRequest, recording_sources, resolve_spec
    from nlbench.store import RunDir, run_dir_name

    rates = parse_numbers(noise, float, "--noise")
    for one, many, one_flag, many_flag in ((method, methods, "--method", "--methods"),
                                           (dataset, datasets, "--dataset", "--datasets"),
                                           (noise_mode, noise_modes, "--noise-mode", "--noise-modes"),
                                           (seed, seeds, "--seed", "--seeds")):
        if one is not None and many is not None:
            raise UsageError(f"give {one_flag} or {many_flag}, not both.")
    grid = sweep or bool(preset or methods or datasets or noise_modes or seeds) or len(rates) > 1
    cfg, registry = load(config, report=True)
    folder = runs_dir(runs, cfg)
    if grid:
        from nlbench.sweep.grid import SweepRequest, apply_preset, expand, parse_data_roots

        asked = SweepRequest(
            methods=split_items(methods) or split_items(method), datasets=split_items(datasets) or split_items(dataset),
            noise=rates, noise_modes=split_items(noise_modes) or split_items(noise_mode),
            seeds=parse_numbers(seeds, int, "--seeds") or ([seed] if seed is not None else []), sets=list(set_),
            data_roots=parse_data_roots(data_root), epochs=epochs, noise_source=noise_source, pretrained=pretrained,
            device=device, cache_dir=cache_dir, noise_file=noise_file, noise_file_base=noise_file_base,
        )
        request = apply_preset(asked, cfg, preset) if preset else asked
        with recording_sources() as recorded:
            specs = expand(request, cfg, registry)
        found: dict[str, dict[str, str]] = {}
        for spec, sources in recorded:
            found.setdefault(spec.run_id, sources)  # expand keeps the first cell of a run id too
        runs_sources = [(spec, sweep_sources(found[spec.run_id], asked, preset)) for spec in specs]
    else:
        if len(data_root) > 1:
            raise UsageError("one --data-root for one run; several (NAME=PATH) are for --sweep.")
        sources: dict[str, str] = {}
        spec = resolve_spec(RunRequest(
            method=method, dataset=dataset, noise=rates[0] if rates else None, noise_mode=noise_mode,
            noise_source=noise_source, seed=seed, epochs=epochs, data_root=data_root[0] if data_root else None,
            pretrained=pretrained, device=device, cache_dir=cache_dir, noise_file=noise_file,
            noise_file_base=noise_file_base, sets=list(set_),
        ), cfg, registry, sources=sources)
        runs_sources = [(spec, sources)]
    states = [RunDir(folder / run_dir_name(spec)).state() for spec, _ in runs_sources]
    lines = [f"# {'preset ' + preset if preset else 'sweep' if grid else 'run'}: {len(runs_sources)} run(s), "
             f"{sum(s.state == 'done' for s in states)} done; store {folder}",
             f"# configuration: {cfg.source or 'none (built-in defaults)'}"]
    for (spec, sources), state in zip(runs_sources, states):
        where = str(folder / run_dir_name(spec))
        lines += ["", *spec_toml(spec, sources, where, state.state, "runs" if grid else "")]
    typer.echo("\n".join(lines))


def sweep_sources(sources: dict[str, str], asked: Any, preset: Optional[str]) -> dict[str, str]:
    """``sources`` of a sweep's run in sweep terms: a value resolve_spec took from a request field
    is the command line's (``--methods``, ...) when the user gave it, else the preset's."""
    typed = {item.split("=", 1)[0].strip() for item in asked.sets}
    from_preset = f"[sweeps.{preset}]"

    def relabel(label: str) -> str:
        reset = re.fullmatch(r"(reset: .*, )(.*)\)", label)
        if reset:
            return f"{reset.group(1)}{relabel(reset.group(2))})"
        if label in SWEEP_FLAGS:
            field, flag = SWEEP_FLAGS[label]
            return flag if getattr(asked, field) not in (None, []) or not preset else from_preset
        if label.startswith("--set ") and preset and label[6:] not in typed:
            return f"{from_preset} set"  # the preset's set items come first: a command-line one wins
        return label

    return {key: relabel(label) for key, label in sources.items()}


def spec_toml(spec: Any, sources: dict[str, str], folder: str, state: str, array: str = "") -> list[str]:
    """The TOML lines of one run spec, each value with its source; under ``[[array]]`` if given."""
    data = spec.to_json()
    runtime = _runtime_keys(type(spec))
    sections: list[tuple[str, list[tuple[str, Any, str]]]] = []

    def walk(table: dict[str, Any], path: list[str]) -> None:
        rows = []
        for key, value in table.items():
            if key == "run_id" or isinstance(value, dict):
                continue
            dotted = ".".join([*path, key])
            source = _source(sources, dotted)
            if dotted in runtime:
                source += "; not in the run id"
            rows.append((key, value, source))
        sections.append((".".join([array, *path] if array else path), rows))
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, [*path, key])

    walk(data, [])
    store = [("run_id", spec.run_id, "hash of every value below in the run id"),
             ("folder", folder, "where the run is stored"),
             ("state", state, "done, running, interrupted, failed or todo")]
    lines = [f"[[{array}]]"] if array else []
    lines += _comment(spec.describe())
    for name, rows in sections:
        if name and name != array:
            lines += ["", f"[{name}]"]
        lines += _rows(store + rows if name == array else rows)
    return lines


def _rows(rows: list[tuple[str, Any, str]]) -> list[str]:
    """``key = value  # source`` lines; a None value is a comment of its own (TOML has no null)."""
    texts = [f"{_key(key)} = {_value(value)}" for key, value, _ in rows if value is not None]
    width = min(ALIGN, max((len(t) for t in texts), default=0))
    return [f"{_key(key)} = {_value(value)}".ljust(width) + f"  # {source}" if value is not None
            else f"# {key}: not set" for key, value, source in rows]


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, 76)]


def _source(sources: dict[str, str], dotted: str) -> str:
    """The source of a dotted key, else of the nearest table holding it."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in sources:
            return sources[".".join(parts[:end])]
    return "?"


def _runtime_keys(cls: type, prefix: str = "") -> set[str]:
    """The dotted keys of the spec's runtime fields (recorded in spec.json, never in the run id)."""
    import dataclasses
    import typing

    from nlbench.options import is_runtime

    hints = typing.get_type_hints(cls)
    out = set()
    for item in dataclasses.fields(cls):
        kind = hints.get(item.name)
        if is_runtime(item):
            out.add(prefix + item.name)
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out |= _runtime_keys(kind, f"{prefix}{item.name}.")
    return out


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(text: str) -> str:
    # A JSON string is a TOML basic string once DEL, which TOML forbids raw, is escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    """A TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Path):
        return _string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    return _string(str(value))
