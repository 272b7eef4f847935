"""``nlbench table``: comparison tables of the stored runs, in the layouts of the paper."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

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
from nlbench.errors import UsageError


def table(
    layout: str = typer.Option("table1", "--layout", "-l",
                               help="table1 (noise x method), table2 (real noisy labels), table3 (clean labels), "
                                    "table8 (CCT networks x consistency) or cross (the stored models on the "
                                    "datasets `nlbench evaluate` tested them on)."),
    fmt: str = typer.Option("rich", "--format", "-f", help="rich, markdown, latex or csv."),
    metric: str = typer.Option("last", "--metric",
                               help="Epoch selection: last (default), lastk (mean of the last k epochs), val (best "
                                    "epoch on the held-out noisy validation split) or best (selected on the test "
                                    "set: an oracle)."),
    score: str = typer.Option("accuracy", "--score",
                              help="accuracy (default), balanced_accuracy, macro_f1 or ece (lower is better)."),
    member: str = typer.Option(
        "model", "--member",
        help="model (what each method deploys; CCT's student, shown beside its teachers' ensemble), single "
             "(one network per method: net1 of co-training methods, CCT's student) or a stored member such as train/ensemble."),
    compare: Optional[str] = typer.Option(None, "--compare",
                                          help="Baseline method: each method's paired difference to it, with its 95% "
                                               "t-interval and the paired t-test, and average ranks."),
    with_paper: bool = typer.Option(False, "--with-paper", help="Show the paper's published value beside each cell."),
    paper: Optional[str] = typer.Option(
        None, "--paper",
        help="Whose published values --with-paper shows (implies it): cct (the CCT paper, the default) or lanet "
             "(LA-Net, ICCV 2023: its Tables 1 and 3, which also print Standard, SCN, RUL, EAC and DMUE)."),
    cost: bool = typer.Option(False, "--cost", help="Also show the training cost of every method."),
    tuned: bool = typer.Option(False, "--tuned", help="Each method tuned by `nlbench tune` beside its default "
                                                       "configuration: chosen values, budget, paired difference."),
    methods: MethodsFilter = None, datasets: DatasetsFilter = None, noise: NoiseFilter = None,
    seeds: SeedsFilter = None, run: RunFilter = None, where: WhereFilter = None,
    runs: RunsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print results in the paper's layouts: mean ± std over seeds, best in bold."""
    from nlbench.cli.common import make_filters, runs_dir
    from nlbench.report.render import render
    from nlbench.report.tables import (
        ALL_SCORES,
        FORMATS,
        LAYOUT_SPECS,
        LAYOUTS,
        build_table,
        cost_rows,
        ranks,
    )
    from nlbench.report.tables import compare as compare_to
    from nlbench.spec.config import find_config, load_config
    from nlbench.train.model_selection import SELECTIONS

    for value, allowed, what in ((layout, LAYOUTS, "layout"), (fmt, FORMATS, "format"), (metric, SELECTIONS, "metric"),
                                 (score, ALL_SCORES, "score")):
        if value not in allowed:
            raise UsageError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}.")
    if compare is not None and not LAYOUT_SPECS[layout].method_rows:
        raise UsageError(f"--compare compares methods; layout {layout} has no method rows (use table1, table2 or table3).")
    if paper is not None:
        from nlbench.report.published import paper_names

        if paper not in paper_names():
            raise UsageError(f"unknown paper {paper!r} for --paper; choose one of {', '.join(paper_names())}.")
        with_paper = True
    cfg = load_config(find_config(config))
    folder = runs_dir(runs, cfg, must_exist=True)
    if tuned:
        _print_tuned(folder, methods, fmt)
        return
    import sys

    result = build_table(folder, metric, member, layout=layout, score=score,
                         with_paper=with_paper, paper=paper or "cct", warn=lambda note: print(note, file=sys.stderr),
                         filters=make_filters(methods, datasets, noise, seeds, run, where))
    if compare is not None and result.rows and compare not in {row[-1] for row in result.rows}:
        shown = sorted({row[-1] for row in result.rows})
        raise UsageError(f"--compare {compare}: no runs of that method in this table; its rows are {', '.join(shown)}.")
    comparison = compare_to(result, compare) if compare is not None else None
    rank_result = ranks(result) if compare is not None else None
    render(result, fmt, comparison=comparison, rank_result=rank_result, cost=cost_rows(result) if cost else None)


def _print_tuned(folder: Path, methods: Optional[str], fmt: str) -> None:
    """``table --tuned``: the outcomes ``nlbench tune`` stored, one table per way of tuning."""
    from nlbench.cli.common import split_items
    from nlbench.report.tuned import print_table, tuned_table
    from nlbench.tuned import load_outcomes

    if fmt not in ("rich", "markdown", "csv"):
        raise UsageError(f"--tuned prints rich, markdown or csv, not {fmt}; the runs themselves export with "
                         "`nlbench export`.")
    groups = load_outcomes(folder, split_items(methods) or None)
    if not groups:
        raise UsageError(f"no outcome of `nlbench tune` in {folder}"
                         + (f" for methods {methods}" if methods else "") + ": run `nlbench tune` first.")
    for context, outcomes in groups:
        print_table(tuned_table(outcomes, context), fmt)
