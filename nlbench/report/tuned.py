"""The tuned-vs-default table: each tuned method at its chosen and its default configuration, paired.

Built from the outcomes ``nlbench tune`` stores (:mod:`nlbench.tuned`), printed by ``nlbench tune``
and ``nlbench table --tuned`` (terminal, Markdown or CSV) and written into ``nlbench report``.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlbench.tuned import MethodOutcome, describe_point

COLUMNS = ("method", "trials", "default", "tuned", "tuned - default", "chosen (val %)")


@dataclass
class TunedTable:
    """A tuned-vs-default table as text cells: a title, rows under :data:`COLUMNS`, and its note."""

    title: str
    rows: list[tuple[str, ...]]
    note: str


def _cell(values: dict[int, float]) -> str:
    """Mean ± sample standard deviation over seeds (one seed: its value)."""
    if not values:
        return "–"
    data = np.array(list(values.values()))
    return f"{data.mean():.2f} ± {data.std(ddof=1):.2f}" if data.size > 1 else f"{data[0]:.2f}"


def _difference(outcome: MethodOutcome) -> str:
    """Tuned minus default, paired over the seeds both have, with the paired t-test's p."""
    from nlbench.report.statistics import paired_comparison

    paired = sorted(set(outcome.default) & set(outcome.tuned))
    if not paired:
        return "–"
    comparison = paired_comparison(np.array([outcome.tuned[s] for s in paired]),
                                   np.array([outcome.default[s] for s in paired]))
    return f"{comparison.mean:+.2f}" + (f" p={comparison.p:.3f}" if comparison.p is not None else "")


def tuned_table(outcomes: list[MethodOutcome], context: dict[str, Any]) -> TunedTable:
    """The table of one way of tuning (``context``: dataset, noise, budget, seeds) over its methods."""
    noise = f", noise {context['noise']:g}" if context.get("noise") is not None else ""
    seeds = ", ".join(map(str, context.get("seeds", [])))
    title = f"Tuned vs default on {context.get('dataset')}{noise}: test accuracy (%), last epoch, seeds {seeds}"
    by_network_epochs = context.get("unit") != "trials"
    rows = []
    for outcome in outcomes:
        chosen = ("none scored" if outcome.chosen is None
                  else f"the default ({outcome.val:.2f})" if outcome.chosen_is_default
                  else f"{describe_point(outcome.chosen)} ({outcome.val:.2f})")
        spent = f"{outcome.trials}" + "".join(f", {n} {what}" for n, what in ((outcome.pruned, "pruned"),
                                                                               (outcome.failed, "failed")) if n)
        if by_network_epochs:
            spent += f", {outcome.spent:g} net-ep"
        rows.append((outcome.method, spent, _cell(outcome.default), _cell(outcome.tuned), _difference(outcome),
                     chosen))
    saved = sum(outcome.saved for outcome in outcomes)
    spent_total = sum(outcome.spent for outcome in outcomes) if by_network_epochs else None
    note = (f"Budget {context.get('budget', 0):g} {context.get('unit')} per method, "
            f"{context.get('sampler')} sampler, {context.get('pruner')} pruner"
            + (f" (pruning saved about {saved:.0f} network-epochs"
               + (f" beside the {spent_total:g} spent)" if spent_total is not None else ")") if saved else "")
            + f"; trials on seed(s) {', '.join(map(str, context.get('tune_seeds', [])))}, chosen on the noisy "
            "validation split (never the test set); tuned - default: mean paired difference, p: paired t-test "
            "over the evaluation seeds.")
    return TunedTable(title, rows, note)


def markdown(table: TunedTable) -> str:
    """The table as a Markdown pipe table under its title, its note below."""
    lines = [f"**{table.title}**", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if c in ("method", "chosen (val %)") else "---:" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table.rows]
    return "\n".join(lines + ["", table.note])


def print_table(table: TunedTable, fmt: str = "rich", out: Any = None) -> None:
    """Print ``table`` as ``rich`` (terminal, words never cut), ``markdown`` or ``csv``."""
    if fmt == "markdown":
        print(markdown(table) + "\n", file=out or sys.stdout)
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("table", *COLUMNS))
        writer.writerows((table.title, *row) for row in table.rows)
        print(buffer.getvalue(), end="", file=out or sys.stdout)
        return
    from rich.table import Table

    from nlbench.progress import keep_words_whole, stdout_console

    shown = Table(title=table.title, title_justify="left")
    for column in COLUMNS:
        shown.add_column(column, justify="left" if column in ("method", "chosen (val %)") else "right")
    for row in table.rows:
        shown.add_row(*row)
    console = stdout_console()
    console.print(keep_words_whole(shown, console.width))
    console.print(table.note, width=min(console.width, 80))  # a paragraph at reading width, not the table's
