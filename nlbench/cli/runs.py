"""``nlbench runs``: every stored run on one line: id, what it is, its state and its last accuracy."""

from __future__ import annotations

from typing import Any

import typer

from nlbench.cli.common import (
    ConfigOption,
    DatasetsFilter,
    MethodsFilter,
    NoiseFilter,
    RunFilter,
    RunsDirOption,
    SeedsFilter,
    WhereFilter,
)

COLUMNS = ("run_id", "dataset", "method", "noise", "seed", "state", "last", "settings", "other_code", "path")


def runs(
    runs: RunsDirOption = None,
    methods: MethodsFilter = None, datasets: DatasetsFilter = None, noise: NoiseFilter = None,
    seeds: SeedsFilter = None, run: RunFilter = None, where: WhereFilter = None,
    fmt: str = typer.Option("text", "--format", "-f", help="text (one aligned line per run) or csv."),
    config: ConfigOption = None,
) -> None:
    """List every stored run: id, dataset, method, noise, seed, state, last accuracy and the settings
    in which it differs from the configured ones (benchmark.toml over the defaults)."""
    import csv
    import sys

    from nlbench.cli.common import make_filters, runs_dir
    from nlbench.errors import UsageError
    from nlbench.progress import stderr_console
    from nlbench.spec.config import find_config, load_config
    from nlbench.store import scan_store

    if fmt not in ("text", "csv"):
        raise UsageError(f"unknown format {fmt!r}; choose text or csv.")
    cfg = load_config(find_config(config))
    folder = runs_dir(runs, cfg, must_exist=True)
    from nlbench.report.runs import settings_of_spec

    wanted = make_filters(methods, datasets, noise, seeds, run, where)
    entries, damaged = scan_store(folder)
    entries = [e for e in entries
               if wanted.matches(e.method, e.dataset, e.spec.get("noise", {}).get("rate"), e.seed, e.run_id,
                                 settings=settings_of_spec(e.spec))]
    lasts, stale = _finished_facts(folder)
    counted = {e.run_id for e in entries if e.path in lasts}  # the copy of each run id that reports count
    usual = _configured(cfg) if entries else None
    rows = [{"run_id": e.run_id, "dataset": e.dataset, "method": e.method, "noise": e.noise, "seed": str(e.seed),
             "state": ("duplicate" if e.state.state == "done" and e.path not in lasts and e.run_id in counted
                       else e.state.state) + ("*" if e.path in stale and fmt == "text" else ""),
             "last": lasts.get(e.path, ""), "settings": differing(e.spec, usual),
             "other_code": " ".join(stale.get(e.path, [])), "path": str(e.path)} for e in entries]
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        shown = COLUMNS[:-2]  # the path is long; csv has it, and which code changed
        width = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in shown[:-1]}
        lines = ["  ".join(c.ljust(width[c]) for c in shown[:-1]) + "  settings"]
        lines += ["  ".join(r[c].ljust(width[c]) for c in shown[:-1]) + "  " + r["settings"] for r in rows]
        if any(r["state"].startswith("duplicate") for r in rows):
            lines.append("duplicate: another folder holds the same run id; tables and exports count the copy "
                         "that finished last, once.")
        marked = sorted({name for e in entries for name in stale.get(e.path, [])})
        if marked:
            from nlbench.code_identity import stale_text

            count = sum(e.path in stale for e in entries)
            lines.append(f"* {count} run(s) {stale_text(marked)} than installed now; "
                         f"`nlbench sweep ... --force` trains them again.")
        sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")
    if damaged:
        stderr_console().print(f"skipped {len(damaged)} run folder(s) whose spec.json is damaged, e.g. {damaged[0]}",
                               markup=False)


def _finished_facts(folder: Any) -> tuple[dict[Any, str], dict[Any, list[str]]]:
    """By folder, for every finished run: the last-epoch accuracy of the deployed model, and the
    plugin files changed since it was trained."""
    from nlbench.code_identity import code_changes
    from nlbench.report.runs import read_runs

    found = read_runs(folder)
    lasts = {run.path: f"{run.result['metrics']['model']['last']:.2f}" for run in found.runs}
    stale = {run.path: changes for run in found.runs if (changes := code_changes(run.result))}
    return lasts, stale


def _configured(cfg: Any) -> Any:
    from nlbench.plugins import get_registry
    from nlbench.report.runs import configured_settings

    return configured_settings(cfg, get_registry(cfg.plugin_paths))


def differing(spec: dict[str, Any], usual: Any) -> str:
    """The settings of a run that differ from the configured ones, as ``key=value`` items."""
    from nlbench.spec.runspec import RunSpec

    try:  # the identity only: where the data lie or the evaluation batch size change no number
        identity = RunSpec.from_json(spec).identity()
    except Exception:  # a spec of an older nlbench: compare what it has
        identity = spec
    method, dataset = spec.get("method", ""), spec.get("data", {}).get("name", "")
    data = {"version": identity.get("data", {}).get("version"), **identity.get("data", {}).get("options", {})}
    out = []
    for values, plain in ((identity.get("hparams", {}), usual.hparams.get(method) if usual else None),
                          (identity.get("train", {}), usual.train.get(dataset) if usual else None),
                          (data, usual.data.get(dataset) if usual else None)):
        if plain is None:
            continue
        out += [f"{key}={value}" for key, value in sorted(values.items()) if key in plain and plain[key] != value
                and not (isinstance(value, list) and tuple(value) == tuple(plain[key] or ()))]
    return ", ".join(out)
