"""``nlbench export``: one row per finished run (identity, settings, every metric, cost) for pandas users;
``--samples RUN``: one row per training sample and epoch of one run (:mod:`nlbench.report.samples`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from nlbench.cli.common import (
    ConfigOption,
    DatasetsFilter,
    MethodsFilter,
    NoiseFilter,
    OverwriteOption,
    RunFilter,
    RunsDirOption,
    SeedsFilter,
    WhereFilter,
)

FORMATS = ("csv", "jsonl", "parquet")


def flatten_result(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """One flat row of a result.json: nested keys joined with dots, curves and matrices left out."""
    row: dict[str, Any] = {"path": str(path)}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list):
            return  # curves, confusion matrices, per-class lists: in result.json, not in a table row
        else:
            row[prefix] = value

    for key in ("run_id", "method", "dataset", "dataset_version", "seed", "initialisation", "test_size",
                "data_fingerprint", "uses_noise_rate", "finished"):
        row[key] = result.get(key)
    for key in ("noise", "hparams", "train", "dataset_options", "cost"):
        walk(key, result.get(key) or {})
    metrics = result.get("metrics", {})
    walk("model", {k: v for k, v in (metrics.get("model") or {}).items() if k != "curve"})
    for member, summary in (metrics.get("members") or {}).items():
        walk(f"member.{member}", {k: v for k, v in summary.items() if k != "curve"})
    final = (result.get("final") or {}).get("model") or {}
    walk("final.per_class_accuracy", final.get("per_class_accuracy") or {})
    return row


def export(
    fmt: str = typer.Option("csv", "--format", "-f", help="csv (default), jsonl or parquet (needs pyarrow)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="File to write (default: stdout; parquet needs a file)."),
    samples: Optional[str] = typer.Option(
        None, "--samples", metavar="RUN",
        help="Instead: one row per training sample and epoch of one run (a run folder, or a run id or its "
             "first characters): selected, score, relabelling, clean and noisy label."),
    methods: MethodsFilter = None, datasets: DatasetsFilter = None, noise: NoiseFilter = None,
    seeds: SeedsFilter = None, run: RunFilter = None, where: WhereFilter = None,
    runs: RunsDirOption = None,
    config: ConfigOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Write one row per finished run: identity, settings, every metric and the cost.

    With --samples RUN: one row per training sample and epoch of that run: whether the method
    selected it, its score (weight, uncertainty, loss), the label it trained on, its clean and noisy label.
    """
    import sys

    import pandas as pd

    from nlbench.cli.common import make_filters, output_file, runs_dir, starts_with
    from nlbench.errors import UsageError
    from nlbench.report.runs import read_runs
    from nlbench.spec.config import find_config, load_config

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if samples is not None:
        given = [flag for flag, value in (("--methods", methods), ("--datasets", datasets), ("--noise", noise),
                                          ("--seeds", seeds), ("--run", run), ("--where", where)) if value]
        if given:
            raise UsageError(f"--samples exports one run, named by its argument; leave out {', '.join(given)}.")
        _export_samples(samples, fmt, out, runs, config, overwrite)
        return
    folder = runs_dir(runs, load_config(find_config(config)), must_exist=True)
    # What an earlier export wrote (csv, jsonl) may be replaced; any other file only with --overwrite.
    target = output_file(out, starts_with(b"path,run_id,", b'{"path":'), overwrite) if out is not None else None
    # The latest copy of each run id, as `nlbench table` counts it.
    found = read_runs(folder, make_filters(methods, datasets, noise, seeds, run, where))
    for warning in found.warnings():
        print(warning, file=sys.stderr)
    frame = pd.DataFrame.from_records([flatten_result(run.result, run.path) for run in found.runs])
    _write(frame, fmt, target)


def _write(frame: Any, fmt: str, target: Optional[Path]) -> None:
    """Write a table as csv, jsonl or parquet to ``target`` (atomically), or csv/jsonl to stdout."""
    import sys

    from nlbench.errors import UsageError

    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError("parquet needs pyarrow: pip install pyarrow (or use --format csv or jsonl).") from None
        if target is None:
            raise UsageError("parquet is a binary format: give a file with --out FILE.parquet.")
        frame.to_parquet(target, index=False)
        return
    text = frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", lines=True)
    text = text if text.endswith("\n") or not text else text + "\n"
    if target is None:
        sys.stdout.write(text)
    else:
        from nlbench.fileio import atomic_write_bytes

        atomic_write_bytes(target, text.encode("utf-8"))


def _export_samples(run: str, fmt: str, out: Optional[str], runs: Optional[str], config: Optional[str],
                    overwrite: bool) -> None:
    """``--samples RUN``: the run's per-sample record as a table (:func:`nlbench.report.samples.sample_table`)."""
    import sys

    from nlbench.cli.common import output_file, runs_dir, starts_with
    from nlbench.cli.show import _find
    from nlbench.report.samples import sample_table
    from nlbench.spec.config import find_config, load_config

    # What an earlier --samples export wrote (csv, jsonl) may be replaced; any other file only with --overwrite.
    target = output_file(out, starts_with(b"index,image,", b'{"index":'), overwrite) if out is not None else None
    folder = Path(run)
    if not folder.is_dir():  # a run id (or its start), as `nlbench show` takes it
        folder = _find(runs_dir(runs, load_config(find_config(config)), must_exist=True), run)
    frame, warnings = sample_table(folder)
    for warning in warnings:
        print(warning, file=sys.stderr)
    _write(frame, fmt, target)
