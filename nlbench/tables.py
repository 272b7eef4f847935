"""Comparison tables from stored runs, in the layout of the CCT paper's Table 1.

Rows are noise level x method, columns datasets, cells mean ± std over seeds with the number of
seeds. Runs whose hyperparameters or training settings differ from the usual ones of their
method/dataset get their own row, labelled with the difference, so nothing is averaged across
different experiments. Cells without runs are shown as missing, never dropped. The best mean of
each noise level and dataset is bold.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from nlbench.store import iter_results

FORMATS = ("rich", "markdown", "latex", "csv")
METRICS = ("last", "lastk", "best")
PAPER_METHODS = ("standard", "coteaching", "coteaching_plus", "jocor", "nct", "scn", "cct")
PAPER_DATASETS = ("rafdb", "ferplus", "affectnet8", "affectnet7", "fec")
MISSING = "–"
CCT_MODEL = "CCT: its distilled student, or its networks' ensemble when it does not distil"
METRIC_TEXT = {
    "last": "accuracy of the last epoch",
    "lastk": "mean accuracy of the last k epochs",
    "best": "accuracy of the best epoch, selected on the test set (optimistic, as the paper reports)",
}


@dataclass
class ComparisonTable:
    """The aggregated cells and how to caption them."""

    cells: pd.DataFrame  # columns: noise, method, dataset, mean, std, n, seeds
    rows: list[tuple[str, str]]
    columns: list[str]
    caption: str


def _noise_label(noise: dict[str, Any]) -> str:
    if noise.get("source") == "dataset":
        return "real"
    label = f"{100 * noise['rate']:g}"
    return label if noise.get("mode", "flip") == "flip" else f"{label} ({noise['mode']})"


def _diff(values: dict[str, Any], usual: dict[str, Any]) -> list[str]:
    return [f"{k}={values[k]}" for k in sorted(values) if values.get(k) != usual.get(k)]


def _most_common(frame: pd.DataFrame, by: str, column: str) -> dict[str, dict[str, Any]]:
    """The most frequent value (a dict of settings) of ``column`` within each group of ``by``."""
    return {key: json.loads(Counter(json.dumps(v, sort_keys=True) for v in group[column]).most_common(1)[0][0])
            for key, group in frame.groupby(by)}


def collect(runs_dir: Path, metric: str, member: str, run_ids: set[str] | None = None,
            damaged: list[Path] | None = None) -> pd.DataFrame:
    """One row per finished run (of ``run_ids``, if given) with the chosen metric of the chosen member.

    Damaged result files are skipped and listed in ``damaged``.
    """
    records = []
    for path, result in iter_results(runs_dir, damaged):
        if run_ids is not None and result.get("run_id") not in run_ids:
            continue
        metrics = result.get("metrics", {})
        summary = metrics.get("model") if member == "model" else metrics.get("members", {}).get(member)
        if not summary:
            continue
        records.append({
            "path": str(path), "dataset": result["dataset"], "method": result["method"],
            "noise": _noise_label(result["noise"]), "noise_rate": result["noise"]["rate"],
            "seed": result["seed"], "value": summary[metric], "k": summary.get("k"),
            "hparams": result.get("hparams", {}), "train": result.get("train", {}),
            # Runs made before results recorded the dataset's version and options have neither.
            "data": {"version": result.get("dataset_version", "1"), **result.get("dataset_options", {})},
            "pretrained": (result.get("pretrained") or {}).get("sha256"),
        })
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return frame
    # Label variants: differences from the most common hyperparameters of the method and the
    # most common training settings and data options (sizes, difficulty, version) of the dataset.
    usual_hp = _most_common(frame, "method", "hparams")
    usual_train = _most_common(frame, "dataset", "train")
    usual_data = _most_common(frame, "dataset", "data")
    labels = []
    for row in frame.itertuples():
        extra = (_diff(row.hparams, usual_hp[row.method]) + _diff(row.train, usual_train[row.dataset])
                 + _diff(row.data, usual_data[row.dataset]))
        if row.pretrained:
            extra.append(f"pretrained={row.pretrained[:8]}")
        labels.append(row.method + (f" [{', '.join(extra)}]" if extra else ""))
    frame["variant"] = labels
    return frame


def _method_order(name: str) -> tuple[int, str]:
    base = name.split(" [", 1)[0]
    return (PAPER_METHODS.index(base) if base in PAPER_METHODS else len(PAPER_METHODS), name)


def _noise_order(label: str) -> tuple[int, float, str]:
    if label == "real":
        return (1, 0.0, label)
    return (0, float(label.split(" ", 1)[0]), label)


def build_table(runs_dir: Path, metric: str = "last", member: str = "model",
                run_ids: set[str] | None = None) -> ComparisonTable:
    """Aggregate every finished run under ``runs_dir`` (or those of ``run_ids``) into the paper's layout."""
    damaged: list[Path] = []
    frame = collect(runs_dir, metric, member, run_ids, damaged)
    if damaged:
        Console(stderr=True).print(
            f"warning: skipped {len(damaged)} damaged result file(s), e.g. {damaged[0]}; "
            f"`nlbench status --failed` lists the runs, and training them again with --force repairs them.",
            markup=False, highlight=False, soft_wrap=True)
    k_text = ""
    if not frame.empty and metric == "lastk":
        k_text = f" (k = {', '.join(str(int(k)) for k in sorted(frame['k'].dropna().unique()))})"
    caption = (
        f"Test accuracy (%) of the {'deployable model' if member == 'model' else member} "
        f"({CCT_MODEL if member == 'model' else 'as stored'}); metric: {METRIC_TEXT[metric]}{k_text}. "
        f"Cells: mean ± std over seeds (number of seeds); {MISSING} = no finished run. Runs in {runs_dir}."
    )
    if frame.empty:
        return ComparisonTable(pd.DataFrame(columns=["noise", "method", "dataset", "mean", "std", "n", "seeds"]),
                               [], [], caption)
    grouped = frame.groupby(["noise", "variant", "dataset"])
    cells = grouped["value"].agg(["mean", "std", "count"]).reset_index()
    cells["std"] = cells["std"].fillna(0.0)
    cells = cells.rename(columns={"variant": "method", "count": "n"})
    cells["seeds"] = [
        " ".join(str(s) for s in sorted(group["seed"])) for _, group in grouped
    ]
    noises = sorted(cells["noise"].unique(), key=_noise_order)
    methods = sorted(cells["method"].unique(), key=_method_order)
    present = list(cells["dataset"].unique())
    columns = [d for d in PAPER_DATASETS if d in present] + sorted(d for d in present if d not in PAPER_DATASETS)
    rows = [(noise, method) for noise in noises for method in methods]
    return ComparisonTable(cells, rows, columns, caption)


def _cell_lookup(table: ComparisonTable) -> dict[tuple[str, str, str], Any]:
    return {(r.noise, r.method, r.dataset): r for r in table.cells.itertuples()}


def _best(table: ComparisonTable) -> set[tuple[str, str, str]]:
    best = set()
    for (noise, dataset), group in table.cells.groupby(["noise", "dataset"]):
        top = group["mean"].max()
        for row in group.itertuples():
            if row.mean == top:
                best.add((noise, row.method, dataset))
    return best


def _text(cell: Any) -> str:
    return f"{cell.mean:.2f} ± {cell.std:.2f} ({cell.n})"


def render(table: ComparisonTable, fmt: str, out: Any = None) -> None:
    """Print the table to stdout in the requested format."""
    out = out or sys.stdout
    if not table.rows:
        print(f"no finished runs found. {table.caption}", file=out)
        return
    lookup, best = _cell_lookup(table), _best(table)
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["noise", "method", "dataset", "mean", "std", "n", "seeds"])
        for noise, method in table.rows:
            for dataset in table.columns:
                cell = lookup.get((noise, method, dataset))
                if cell is None:
                    writer.writerow([noise, method, dataset, "", "", 0, ""])
                else:
                    writer.writerow([noise, method, dataset, f"{cell.mean:.4f}", f"{cell.std:.4f}", cell.n, cell.seeds])
        return
    if fmt == "rich":
        rich_table = Table(title="Table 1: accuracy (%) under label noise", caption=table.caption)
        rich_table.add_column("noise %")
        rich_table.add_column("method")
        for dataset in table.columns:
            rich_table.add_column(dataset, justify="right")
        previous = None
        for noise, method in table.rows:
            shown = []
            for dataset in table.columns:
                cell = lookup.get((noise, method, dataset))
                text = MISSING if cell is None else _text(cell)
                shown.append(f"[bold]{text}[/bold]" if (noise, method, dataset) in best else text)
            rich_table.add_row(noise if noise != previous else "", method.replace("[", "\\["), *shown,
                               end_section=False)
            previous = noise
        Console(file=out, width=200).print(rich_table)
        return
    if fmt == "markdown":
        lines = ["| noise % | method | " + " | ".join(table.columns) + " |",
                 "|---|---|" + "---:|" * len(table.columns)]
        for noise, method in table.rows:
            parts = []
            for dataset in table.columns:
                cell = lookup.get((noise, method, dataset))
                text = MISSING if cell is None else _text(cell)
                parts.append(f"**{text}**" if (noise, method, dataset) in best else text)
            lines.append(f"| {noise} | {method} | " + " | ".join(parts) + " |")
        print("\n".join(lines) + f"\n\n{table.caption}", file=out)
        return
    # latex (booktabs)
    buffer = io.StringIO()
    buffer.write("\\begin{table}[t]\n\\centering\n")
    buffer.write(f"\\caption{{{_latex_escape(table.caption)}}}\n")
    buffer.write("\\begin{tabular}{ll" + "r" * len(table.columns) + "}\n\\toprule\n")
    buffer.write("Noise (\\%) & Method & " + " & ".join(_latex_escape(c) for c in table.columns) + " \\\\\n\\midrule\n")
    previous = None
    for noise, method in table.rows:
        if previous is not None and noise != previous:
            buffer.write("\\midrule\n")
        parts = []
        for dataset in table.columns:
            cell = lookup.get((noise, method, dataset))
            text = "--" if cell is None else f"{cell.mean:.2f} $\\pm$ {cell.std:.2f} ({cell.n})"
            parts.append(f"\\textbf{{{text}}}" if (noise, method, dataset) in best else text)
        shown_noise = _latex_escape(noise) if noise != previous else ""
        buffer.write(f"{shown_noise} & {_latex_escape(method)} & " + " & ".join(parts) + " \\\\\n")
        previous = noise
    buffer.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    print(buffer.getvalue(), end="", file=out)


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#")):
        text = text.replace(char, escaped)
    return text
