"""``nlbench plot KIND``: the paper's figures and the field's diagnostic plots, as PNG and PDF."""

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

KIND_HELP = ("lambda (CCT's balancing curves), curves (test accuracy per epoch), memorisation (training accuracy "
             "on clean and noisy samples), selection (label precision; SCN's relabelling), confusion, temperature "
             "(CCT student vs distillation temperature), gradcam, ranks (critical-difference diagram)")


def plot(
    kind: str = typer.Argument(..., help=KIND_HELP),
    out: str = typer.Option("figures", "--out", "-o", help="Folder to write the PNG and PDF files to."),
    methods: MethodsFilter = None, datasets: DatasetsFilter = None, noise: NoiseFilter = None,
    seeds: SeedsFilter = None, run: RunFilter = None, where: WhereFilter = None,
    per_run: bool = typer.Option(False, "--per-run", help="confusion: one matrix per run, not summed over seeds."),
    metric: str = typer.Option("last", "--metric", help="temperature, ranks: last, lastk, val or best."),
    layout: str = typer.Option("table1", "--layout", help="ranks: the table layout whose cells are ranked."),
    images: int = typer.Option(8, "--images", help="gradcam: test images per run."),
    betas: str = typer.Option("0.25,0.5,0.65,1,2", "--betas", help="lambda: the beta values to draw."),
    epochs: int = typer.Option(100, "--epochs", help="lambda: epochs of the schedule."),
    runs: RunsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Draw one kind of figure from the stored runs (PNG and PDF under --out)."""
    from nlbench.cli.common import runs_dir
    from nlbench.errors import UsageError
    from nlbench.progress import stdout_console
    from nlbench.report.figures import KINDS
    from nlbench.spec.config import find_config, load_config

    if kind not in KINDS:
        raise UsageError(f"unknown figure {kind!r}; choose one of {', '.join(KINDS)}.")
    if kind in ("temperature", "ranks") and metric not in ("last", "lastk", "val", "best"):
        raise UsageError(f"unknown metric {metric!r}; choose one of last, lastk, val, best.")
    if images < 1 or images > 64:
        raise UsageError(f"--images must be in [1, 64], got {images}.")
    folder = runs_dir(runs, load_config(find_config(config)), must_exist=kind != "lambda")  # lambda reads no runs
    figure = draw(kind, folder, Path(out).expanduser(), make_filters(methods, datasets, noise, seeds, run, where),
                  per_run=per_run, metric=metric, layout=layout, images=images, betas=betas, epochs=epochs)
    console = stdout_console()
    for path in figure.files:
        console.print(f"wrote {path}", markup=False, soft_wrap=True)


def draw(kind: str, folder: Path, out: Path, filters, *, per_run: bool = False, metric: str = "last",
         layout: str = "table1", images: int = 8, betas: str = "0.25,0.5,0.65,1,2", epochs: int = 100):
    """Draw one figure kind; shared by ``plot`` and ``report``."""
    from nlbench.cli.common import parse_numbers
    from nlbench.errors import UsageError
    from nlbench.progress import stderr_console
    from nlbench.report import figures
    from nlbench.report.runs import read_runs

    figures.require()
    if kind == "lambda":
        values = parse_numbers(betas, float, "--betas")
        if not values or any(b <= 0 for b in values):
            raise UsageError("--betas takes positive numbers, e.g. 0.25,0.65,2.")
        if not 2 <= epochs <= 10_000:
            raise UsageError(f"--epochs must be between 2 and 10,000 for the lambda schedule, got {epochs}.")
        return figures.plot_lambda(out, values, epochs)
    if kind == "ranks":
        narrowed = any(getattr(filters, f) for f in ("methods", "datasets", "noise", "seeds", "run_ids"))
        ids = {r.run_id for r in read_runs(folder, filters).runs} if narrowed else None
        return figures.plot_ranks(folder, out, layout, metric, ids)
    found = read_runs(folder, filters)
    for warning in found.warnings():
        stderr_console().print(warning, markup=False)
    runs = found.runs
    if not runs:
        raise UsageError(f"no finished runs in {folder} match the filters; `nlbench status --runs-dir {folder}` lists them.")
    if len(runs) > 20:
        stderr_console().print(f"reading {len(runs)} runs", markup=False)
    if kind == "curves":
        return figures.plot_curves(runs, out)
    if kind == "memorisation":
        return figures.plot_memorisation(runs, out)
    if kind == "selection":
        return figures.plot_selection(runs, out)
    if kind == "confusion":
        return figures.plot_confusion(runs, out, per_run)
    if kind == "temperature":
        return figures.plot_temperature(runs, out, metric)
    from nlbench.plugins import get_registry

    return figures.plot_gradcam(runs, out, get_registry(), images,
                                progress=lambda text: stderr_console().print(text, markup=False))
