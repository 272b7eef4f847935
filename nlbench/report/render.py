"""Printing of comparison tables (:mod:`nlbench.report.tables`): rich, markdown, LaTeX (booktabs) and CSV."""

from __future__ import annotations

import csv
import io
import math
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nlbench.report.tables import LAYOUT_SPECS, MISSING, CompareTable, ComparisonTable


def _console(out: Any, wide: int) -> Console:
    """The terminal's width on a terminal; written to a file or a pipe, wide enough not to wrap cells."""
    isatty = getattr(out, "isatty", None)
    return (Console(file=out, emoji=False) if isatty is not None and isatty()
            else Console(file=out, width=max(100, wide), emoji=False))


def _best(table: ComparisonTable) -> set[tuple[tuple[str, ...], str]]:
    """The best cell of every group: a column within one noise level (method rows), else a row."""
    method_rows = LAYOUT_SPECS[table.layout].method_rows
    groups: dict[Any, list[Any]] = {}
    for cell in table.cells.itertuples():
        if cell.row[-1].count(":"):  # models shown beside the deployed one never compete
            continue
        key = (cell.row[:-1], cell.column) if method_rows else cell.row
        groups.setdefault(key, []).append(cell)
    best = set()
    for members in groups.values():
        top = (min if table.lower_is_better else max)(c.mean for c in members)
        best |= {(c.row, c.column) for c in members if c.mean == top}
    return best


#: Marks a cell with a model that answers one class for most of the test set.
FLAG = "†"
#: The first row part of the reference rows (majority class, chance).
REFERENCE_ROW = ("reference",)


def _reference_rows(table: ComparisonTable, ranked: bool) -> list[Any]:
    """The majority-class and chance rows under a table whose rows are methods (not table8)."""
    if not table.references or not LAYOUT_SPECS[table.layout].method_rows:
        return []
    out = []
    for what, value in (("majority class", "majority"), ("chance", "chance")):
        values = [getattr(table.references[c], value)(table.score) if c in table.references else None
                  for c in table.columns]
        if all(v is None for v in values):
            continue
        if len(table.row_names) == 1:
            shown = [f"reference: {what}"]
        else:
            shown = ["" if out else "reference", *([""] * (len(table.row_names) - 2)), what]
        cells = [(MISSING if v is None else f"{v:.2f}", False) for v in values] + ([("", False)] if ranked else [])
        out.append((REFERENCE_ROW, shown, cells))
    return out


def full_caption(table: ComparisonTable) -> str:
    """The caption, the test splits' reference scores and the one-class flags."""
    text = table.caption
    if table.references:
        text += " References (test split): " + "; ".join(
            f"{c}: {table.references[c].describe(table.score)}" for c in table.columns if c in table.references) + "."
    if table.flags:
        lines = [line for row in table.rows for c in table.columns for line in table.flags.get((row, c), [])]
        shown = lines[:6] + ([f"... and {len(lines) - 6} more"] if len(lines) > 6 else [])
        text += (f" {FLAG} a model answers one class for most of the test set (more than half of its answers, "
                 f"at least 1.5x that class's share of the labels): " + "; ".join(shown) + ".")
    return text


def cell_text(table: ComparisonTable, row: tuple[str, ...], column: str) -> str:
    """``mean ± std (n)``, ``mean (1)`` for one seed, with the paper's value where attached."""
    cell = table.cell(row, column)
    text = MISSING if cell is None else (
        f"{cell.mean:.2f} ({cell.n})" if cell.n < 2 or math.isnan(cell.std) else f"{cell.mean:.2f} ± {cell.std:.2f} ({cell.n})")
    paper = table.paper.get((row, column))
    if paper is not None:
        text += f"; paper {paper:.2f}" + (f" (Δ {cell.mean - paper:+.2f})" if cell is not None else "")
    return text


def compare_text(comparison: Any) -> str:
    """``+1.23 [-0.40, +2.90] p=0.210 n.s.``; nothing but the count for fewer than 3 seeds (a mean of
    two differences without a test invites reading it as a result)."""
    if comparison.low is None:
        return f"n={comparison.n}: too few seeds"
    p = "" if comparison.p is None else f" p={comparison.p:.3f}"
    mark = "*" if comparison.significant else "n.s."
    return f"{comparison.mean:+.2f} [{comparison.low:+.2f}, {comparison.high:+.2f}]{p} {mark}"


def render(table: ComparisonTable, fmt: str, out: Any = None, comparison: CompareTable | None = None,
           rank_result: Any = None, cost: list[dict[str, Any]] | None = None) -> None:
    """Print the table (and the requested comparison, ranks and cost) in ``fmt``."""
    out = out or sys.stdout
    if not table.rows:
        print(f"no finished runs found for layout {table.layout}. {table.caption}", file=out)
        return
    best = _best(table)
    header = [*table.row_names, *table.columns]
    rank_of: dict[tuple[str, ...], float] = {}
    if rank_result is not None:
        from nlbench.report.tables import row_ranks

        rank_of = row_ranks(table)
        header.append("avg rank")
    body = []
    previous: tuple[str, ...] | None = None
    for row in table.rows:
        shown = [part if previous is None or i >= len(row) - 1 or part != previous[i] else ""
                 for i, part in enumerate(row)]
        previous = row
        cells = [(cell_text(table, row, c) + (f" {FLAG}" if (row, c) in table.flags else ""), (row, c) in best)
                 for c in table.columns]
        if rank_result is not None:
            cells.append((f"{rank_of[row]:.2f}" if row in rank_of else MISSING, False))
        body.append((row, shown, cells))
    body += _reference_rows(table, rank_result is not None)
    if fmt == "csv":
        _csv(table, out, comparison)
        return
    if fmt == "latex":
        _latex(table, header, body, out)
        return
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "---|" * len(table.row_names) + "---:|" * (len(header) - len(table.row_names))]
        for _, shown, cells in body:
            parts = [f"**{t}**" if b else t for t, b in cells]
            lines.append("| " + " | ".join([*shown, *parts]) + " |")
        print("\n".join(lines) + f"\n\n{full_caption(table)}", file=out)
    else:
        rich_table = Table(title=table.title)
        for name in table.row_names:
            rich_table.add_column(name)
        for column in header[len(table.row_names):]:
            rich_table.add_column(column, justify="right")
        for index, (row, shown, cells) in enumerate(body):
            if index and len(row) > 1 and shown[0] or row == REFERENCE_ROW:
                rich_table.add_section()  # a new noise level (or dataset)
            parts = [f"[bold]{t}[/bold]" if b else t for t, b in cells]
            rich_table.add_row(*(s.replace("[", "\\[") for s in shown), *parts)
        _print_with_caption(_console(out, 24 * len(header)), rich_table, full_caption(table))
    if comparison is not None:
        _print_comparison(comparison, fmt, out)
    if rank_result is not None:
        print(rank_text(rank_result), file=out)
    if cost:
        _print_cost(cost, fmt, out)


def rank_text(result: Any) -> str:
    """One paragraph: average ranks, Friedman p and the Nemenyi critical difference."""
    if not result.cells:
        return "Average ranks: no cell where every method ran."
    order = sorted(zip(result.average, result.methods))
    text = (f"Average rank over {result.cells} cell(s) where every method ran (1 = best): "
            + ", ".join(f"{m} {r:.2f}" for r, m in order) + ".")
    if result.friedman_p is not None:
        text += (f" Friedman test p = {result.friedman_p:.3f}; Nemenyi critical difference (alpha = 0.05) = "
                 f"{result.critical_difference:.2f}: methods whose mean ranks differ by less are not "
                 f"significantly different.")
    else:
        text += " (The Friedman test needs at least 3 methods and 2 cells.)"
    return text


def _print_comparison(comparison: CompareTable, fmt: str, out: Any) -> None:
    if fmt == "markdown":
        lines = ["", "| method | " + " | ".join(comparison.columns) + " |", "|---|" + "---:|" * len(comparison.columns)]
        for row in comparison.rows:
            cells = [compare_text(comparison.cells[(row, c)]) if (row, c) in comparison.cells else MISSING
                     for c in comparison.columns]
            lines.append(f"| {' / '.join(row)} | " + " | ".join(cells) + " |")
        print("\n".join(lines) + f"\n\n{comparison.caption}", file=out)
        return
    rich_table = Table(title=f"Difference to {comparison.baseline}")
    rich_table.add_column("row")
    for column in comparison.columns:
        rich_table.add_column(column, justify="right")
    for row in comparison.rows:
        cells = [compare_text(comparison.cells[(row, c)]) if (row, c) in comparison.cells else MISSING
                 for c in comparison.columns]
        rich_table.add_row(" / ".join(row).replace("[", "\\["), *cells)
    _print_with_caption(_console(out, 36 * (len(comparison.columns) + 1)), rich_table, comparison.caption)


def _print_cost(cost: list[dict[str, Any]], fmt: str, out: Any) -> None:
    def num(value: Any, spec: str) -> str:
        return MISSING if value is None else format(value, spec)

    header = ["dataset", "method", "runs", "network-epochs", "passes", "seconds/run", "train img/s"]
    rows = [[c["dataset"], c["method"], str(c["runs"]), num(c["network_epochs"], ".0f"),
             num(c.get("pass_epochs"), ".0f"), num(c["seconds"], ".1f"), num(c["images_per_s"], ".1f")] for c in cost]
    if fmt == "markdown":
        lines = ["", "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * 5] + ["| " + " | ".join(r) + " |" for r in rows]
        print("\n".join(lines), file=out)
        return
    rich_table = Table(title="Training cost (mean per run)")
    for i, name in enumerate(header):
        rich_table.add_column(name, justify="left" if i < 2 else "right")
    for r in rows:
        rich_table.add_row(r[0], r[1].replace("[", "\\["), *r[2:])
    _print_with_caption(_console(out, 80), rich_table,
                        "network-epochs = networks trained x epochs, summed over phases; passes = forward-backward "
                        "passes over the training set (EAC: 2 per network-epoch; measured work where a method "
                        "reports it, a no-grad forward counting 1/3).")


#: The widest a caption paragraph is wrapped to: a table may be wider, prose is read at 80 columns.
CAPTION_COLUMNS = 80


def _print_with_caption(console: Console, rich_table: Table, caption: str) -> None:
    """The table, then its caption as one paragraph at the terminal's width up to 80 columns: a
    rich caption is wrapped to the table's width, which makes a narrow table's caption a tall
    column of short lines."""
    console.print(rich_table)
    console.print(Text(caption), width=min(console.width, CAPTION_COLUMNS), soft_wrap=False)


def _csv(table: ComparisonTable, out: Any, comparison: CompareTable | None) -> None:
    writer = csv.writer(out)
    extra = ["paper"] if table.paper else []
    compared = ["diff", "diff_low", "diff_high", "p"] if comparison is not None else []
    writer.writerow([*table.row_names, "column", "mean", "std", "n", "seeds", *extra, *compared, "one_class"])
    for row in table.rows:
        for column in table.columns:
            cell = table.cell(row, column)
            values = ["", "", 0, ""] if cell is None else [
                f"{cell.mean:.4f}", "" if math.isnan(cell.std) else f"{cell.std:.4f}", cell.n, cell.seeds]
            paper = [table.paper.get((row, column), "")] if table.paper else []
            diff: list[Any] = []
            if comparison is not None:
                c = comparison.cells.get((row, column))
                diff = ["", "", "", ""] if c is None or c.low is None else [  # < 3 seeds: nothing
                    f"{c.mean:.4f}", f"{c.low:.4f}", f"{c.high:.4f}", "" if c.p is None else f"{c.p:.4g}"]
            writer.writerow([*row, column, *values, *paper, *diff, " | ".join(table.flags.get((row, column), []))])
    for kind in ("majority", "chance"):  # reference rows: n = the test split's size
        for column in table.columns:
            reference = table.references.get(column)
            value = None if reference is None else getattr(reference, kind)(table.score)
            if value is not None:
                name = f"reference: {'majority class' if kind == 'majority' else kind}"
                writer.writerow([*([""] * (len(table.row_names) - 1)), name, column, f"{value:.4f}", "",
                                 reference.size, "", *([""] * (len(extra) + len(compared))), ""])


def _latex(table: ComparisonTable, header: list[str], body: list[Any], out: Any) -> None:
    buffer = io.StringIO()
    buffer.write("\\begin{table}[t]\n\\centering\n")
    buffer.write(f"\\caption{{{latex_escape(full_caption(table))}}}\n")
    buffer.write("\\begin{tabular}{" + "l" * len(table.row_names) + "r" * (len(header) - len(table.row_names))
                 + "}\n\\toprule\n")
    buffer.write(" & ".join(latex_escape(h) for h in header) + " \\\\\n\\midrule\n")
    for index, (row, shown, cells) in enumerate(body):
        if index and len(row) > 1 and shown[0]:
            buffer.write("\\midrule\n")
        parts = [latex_escape(text.replace(MISSING, "--")) for text, _ in cells]
        parts = [f"\\textbf{{{p}}}" if bold else p for p, (_, bold) in zip(parts, cells)]
        buffer.write(" & ".join([*(latex_escape(s) for s in shown), *parts]) + " \\\\\n")
    buffer.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    print(buffer.getvalue(), end="", file=out)


def latex_escape(text: str) -> str:
    """Escape the characters LaTeX treats specially."""
    for char, escaped in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"),
                          ("Δ", "$\\Delta$"), ("±", "$\\pm$")):
        text = text.replace(char, escaped)
    return text
