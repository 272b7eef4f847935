"""``nlbench status``: the state of every run in a store, per grid cell, from the files alone."""

from __future__ import annotations

from typing import Any

import typer

from nlbench.cli.common import ConfigOption, RunsDirOption

#: The count columns' headers where the full ones do not fit the terminal.
SHORT_HEADERS = {"running": "run", "interrupted": "int", "failed": "fail"}


def status(
    runs: RunsDirOption = None,
    failed: bool = typer.Option(False, "--failed", help="Also list every failed and interrupted run with its error."),
    config: ConfigOption = None,
) -> None:
    """Done, running (epoch, last heartbeat), interrupted and failed runs per cell; exit 1 if any failed."""
    import time

    from rich.table import Table

    from nlbench.cli.common import runs_dir
    from nlbench.progress import keep_words_whole, stderr_console, stdout_console, table_width
    from nlbench.spec.config import find_config, load_config
    from nlbench.store import STATES, scan_store

    folder = runs_dir(runs, load_config(find_config(config)), must_exist=True)
    entries, damaged = scan_store(folder)
    out = stdout_console()
    cells: dict[tuple[str, str, str], dict[str, int]] = {}
    for entry in entries:
        counts = cells.setdefault((entry.dataset, entry.method, entry.noise), dict.fromkeys(STATES, 0))
        counts[entry.state.state] += 1
    table = Table(title=f"runs in {folder}", title_justify="left")
    for column in ("dataset", "method", "noise", *STATES, "total"):
        table.add_column(column, justify="right" if column in (*STATES, "total") else "left")
    rows = []
    totals = dict.fromkeys(STATES, 0)
    for (dataset, method, noise), counts in sorted(cells.items()):
        rows.append((dataset, method, noise, *(str(counts[s] or "") for s in STATES), str(sum(counts.values()))))
        for s in STATES:
            totals[s] += counts[s]
    for row in rows:
        table.add_row(*row)
    table.add_section()
    table.add_row("all", "", "", *(str(totals[s]) for s in STATES), str(sum(totals.values())))
    if table_width(table) > out.width:  # narrow: short headers, said in a legend, rather than cut ones
        for column in table.columns:
            column.header = SHORT_HEADERS.get(str(column.header), column.header)
        table.caption = "; ".join(f"{short} = {long}" for long, short in SHORT_HEADERS.items())
        table.caption_justify = "left"
    out.print(keep_words_whole(table, out.width))
    now = time.time()
    for entry in entries:
        info = entry.state.status
        where = (f"SLURM job {info['slurm_job']}" if info.get("slurm_job")
                 else f"{info.get('host', '?')} pid {info.get('pid', '?')}")
        if entry.state.state == "running":
            beat = now - float(info.get("updated", now))
            epoch = f"{info.get('phase', 'train')} epoch {info.get('epoch', 0)}/{info.get('epochs', '?')}"
            _line(out, "running", entry.path, f"{epoch}, last heartbeat {beat:.0f} s ago ({where})")
        elif entry.state.state == "interrupted" and "Requeued" in str(info.get("error", "")):
            _line(out, "requeued", entry.path, f"{where}, stopped after epoch {info.get('epoch', '?')}; "
                                               "resumes from its checkpoint when SLURM restarts the job")
    if failed:
        for entry in entries:
            if entry.state.state in ("failed", "interrupted"):
                log = entry.state.status.get("log")
                _line(out, entry.state.state, entry.path, (entry.state.detail or "(no error recorded)")
                      + (f"\n{'':<12}log: {log}" if log else ""))
    elif totals["failed"]:
        out.print(f"failed      {totals['failed']} run(s): `nlbench status --failed` lists them with their errors"
                  " and job logs", markup=False, highlight=False)
    _report_other_code(out, entries)
    if damaged:
        stderr_console().print(f"skipped {len(damaged)} run folder(s) whose spec.json is damaged or from nlbench 0.1, "
                               f"e.g. {damaged[0]}",
                               markup=False)
    if totals["failed"]:
        raise typer.Exit(1)


def _line(out: Any, state: str, path: Any, text: str) -> None:
    out.print(f"{state:<11} {path}: {text}", markup=False, highlight=False)


def _report_other_code(out: Any, entries: list[Any]) -> None:
    """A line per plugin file that changed since some done runs were trained with it."""
    from collections import Counter

    from nlbench.code_identity import code_changes, stale_text
    from nlbench.fileio import read_json_or_none
    from nlbench.store import RESULT

    by_file: Counter = Counter()
    for entry in entries:
        if entry.state.state == "done":
            result = read_json_or_none(entry.path / RESULT)
            by_file.update(code_changes(result) if isinstance(result, dict) else [])
    for name, count in sorted(by_file.items()):
        out.print(f"other code  {count} done run(s) were {stale_text([name])} than installed now; "
                  f"`nlbench runs` marks them and `nlbench sweep ... --force` trains them again.",
                  markup=False, highlight=False)
