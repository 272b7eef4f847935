"""Rows, the fixed-width table, the JSON written after every row, and ``--show``.

Needs neither torch nor nlbench, so ``--help`` and ``--show`` answer without the heavy imports.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

HEADER = ("row", "img/s", "x ref", "time", "peak GiB", "TFLOP/s", "% peak", "syncs/step", "notes")


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, float)) and abs(value) < 10 and spec in (",.0f", ".1f"):
        spec = ".2f" if abs(value) >= 0.01 or value == 0 else ".2g"  # small CPU figures stay readable
    return format(value, spec)


def _time_cell(row: dict[str, Any]) -> str:
    if row.get("eval_s") is not None:
        return f"{row['eval_s']:.3f} s"
    if row.get("step_ms") is not None:
        return f"{row['step_ms']:.1f} ms"
    return "-"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results as a fixed-width text table (also what ``--show`` prints)."""
    lines = []
    for row in rows:
        status = row.get("status", "ok")
        notes = row.get("notes", "")
        if status != "ok":
            notes = f"{status}" + (f"; {notes}" if notes else "")
        lines.append((
            row["name"], _fmt(row.get("img_s"), ",.0f"), _fmt(row.get("x_ref"), ".2f"), _time_cell(row),
            _fmt(row.get("peak_gib"), ".2f"), _fmt(row.get("tflops"), ".1f"), _fmt(row.get("pct_peak"), ".1f"),
            _fmt(row.get("syncs_per_step"), "d") if isinstance(row.get("syncs_per_step"), int) else "-",
            notes,
        ))
    widths = [max(len(HEADER[i]), *(len(r[i]) for r in lines)) if lines else len(HEADER[i]) for i in range(8)]

    def line(cells: tuple[str, ...]) -> str:
        pairs = zip(cells[:8], widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(pairs))

    out = [line(HEADER) + "  notes", "-" * (sum(widths) + 2 * 8 + 5)]
    out.extend(line(r) + "  " + r[8] for r in lines)
    return "\n".join(out)


class Report:
    """Collects rows, prints each as it lands, and rewrites the JSON after every row."""

    def __init__(self, path: Path | None, meta: dict[str, Any], budget_s: float) -> None:
        self.path = path
        self.meta = meta
        self.rows: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.summary: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return math.inf if self.budget_s <= 0 else self.budget_s - self.elapsed()

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        row.setdefault("status", "ok")
        row["at_s"] = round(self.elapsed(), 1)
        self.rows.append(row)
        print(f"[{row['at_s']:7.1f}s] " + format_table([row]).splitlines()[-1], flush=True)
        self.save()
        return row

    def find(self, name: str) -> dict[str, Any] | None:
        for row in self.rows:
            if row["name"] == name and row.get("status") == "ok":
                return row
        return None

    def save(self) -> None:
        if self.path is None:
            return
        data = {"meta": self.meta, "rows": self.rows, "summary": self.summary,
                "elapsed_s": round(self.elapsed(), 1)}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.path)


def print_summary(report: Report) -> None:
    """The final table and the summary lines."""
    print()
    print(format_table(report.rows))
    s = report.summary
    if s:
        print()
        for key, value in s.items():
            if isinstance(value, float):
                value = f"{value:,.2f}"
            print(f"{key}: {value}")


def show(path: str) -> int:
    """Print the table of a JSON written by --json."""
    data = json.loads(Path(path).read_text())
    meta = data.get("meta", {})
    report = Report(None, meta, 0)
    report.rows, report.summary = data.get("rows", []), data.get("summary", {})
    print(f"{path}: {meta.get('gpu') or meta.get('device')}, torch {meta.get('torch')}, {data.get('elapsed_s')} s")
    print_summary(report)
    return 0
