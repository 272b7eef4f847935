"""``nlbench report``: a self-contained Markdown + HTML report of a set of runs (tables, figures, protocol)."""

from __future__ import annotations

from pathlib import Path

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
    make_filters,
)


def report(
    out: str = typer.Option("report", "--out", "-o", help="Folder to write report.md, report.html and figures/ to."),
    methods: MethodsFilter = None, datasets: DatasetsFilter = None, noise: NoiseFilter = None,
    seeds: SeedsFilter = None, run: RunFilter = None, where: WhereFilter = None,
    title: str = typer.Option("nlbench report", "--title", help="Title of the report."),
    gradcam: int = typer.Option(2, "--gradcam", help="Runs to draw Grad-CAM maps for (0: none; each rebuilds a run)."),
    runs: RunsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Write one report of the stored runs: every table layout with data, the figures, the protocol."""
    from nlbench.cli.common import runs_dir
    from nlbench.progress import stderr_console, stdout_console
    from nlbench.report import document as builder
    from nlbench.spec.config import find_config, load_config

    folder = runs_dir(runs, load_config(find_config(config)), must_exist=True)
    target = Path(out).expanduser()
    err = stderr_console()
    sections = builder.build(folder, target, make_filters(methods, datasets, noise, seeds, run, where), gradcam_runs=gradcam,
                             progress=lambda text: err.print(text, markup=False))
    md, html = builder.write(sections, target, title)
    console = stdout_console()
    console.print(f"wrote {md} and {html} ({sum(len(s.figures) for s in sections)} figures)", markup=False,
                  soft_wrap=True)
    for number, section in enumerate(sections, start=1):
        console.print(f"  {number}. {section.title}", markup=False)
