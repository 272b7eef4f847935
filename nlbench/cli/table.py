"""``nlbench table``: the comparison table of every stored run, in the layout of the paper."""

from __future__ import annotations

from typing import Optional

import typer

from nlbench.errors import UsageError


def table(
    fmt: str = typer.Option("rich", "--format", "-f", help="rich, markdown, latex or csv."),
    metric: str = typer.Option("last", "--metric", help="last (default), lastk (mean of the last k epochs) or best."),
    member: str = typer.Option(
        "model", "--member", help="Which model of each run: model (deployable; CCT's student) or e.g. train/ensemble."
    ),
    runs: Optional[str] = typer.Option(None, "--runs-dir", help="Where runs are stored (default: ./runs)."),
    config: Optional[str] = typer.Option(None, "--config", help="benchmark.toml to read."),
) -> None:
    """Print Table-1-style results: rows noise x method, columns datasets, mean ± std over seeds."""
    from nlbench.cli.common import runs_dir
    from nlbench.config import find_config, load_config
    from nlbench.tables import FORMATS, METRICS, build_table, render

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    cfg = load_config(find_config(config))
    folder = runs_dir(runs, cfg)
    result = build_table(folder, metric, member)
    render(result, fmt)
