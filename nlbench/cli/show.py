"""``nlbench show RUN``: one run in full: its spec, its curves, its per-class accuracy and confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nlbench.cli.common import ConfigOption, RunsDirOption, transition_blocks
from nlbench.errors import UsageError


def show(
    run: str = typer.Argument(..., help="A run folder, or a run id (or its first characters) in the store."),
    member: str = typer.Option("model", "--member", help="Which model's per-class results: model or e.g. train/net1."),
    runs: RunsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one stored run: the resolved spec, the per-epoch curves, per-class accuracy and the confusion matrix."""
    from nlbench.progress import stdout_console
    from nlbench.spec.config import find_config, load_config

    folder = Path(run)
    if not folder.is_dir():  # a run id (or its start): a folder given by path is shown even when damaged
        folder = locate_run(run, runs, load_config(find_config(config)))
    console = stdout_console()
    for block in describe_run(folder, member, console.width):
        console.print(block)


def locate_run(run: str, runs: str | None, config: Any) -> Path:
    """A run named on the command line: its folder, or its id (or first characters) in the store."""
    from nlbench.cli.common import runs_dir

    folder = Path(run)
    if folder.is_dir():
        return folder
    return _find(runs_dir(runs, config, must_exist=True), run)


def _find(root: Path, prefix: str) -> Path:
    from nlbench.store import scan_store

    entries, _ = scan_store(root)
    matching = [e for e in entries if e.run_id.startswith(prefix)]
    found = [e.path for e in matching]
    if len({e.run_id for e in matching}) == 1 and len(found) > 1:  # copies of one run: the one reports count
        from nlbench.report.runs import read_runs

        counted = read_runs(root, run_ids={matching[0].run_id}).runs
        if counted:
            return counted[0].path
    if not found:
        raise UsageError(f"no run folder {prefix!r} and no run id starting with {prefix!r} in {root}; "
                         f"`nlbench runs --runs-dir {root}` lists the runs with their ids.")
    if len(found) > 1:
        raise UsageError(f"{len(found)} runs have an id starting with {prefix!r} in {root}; give more characters.")
    return found[0]


def describe_run(folder: Path, member: str = "model", width: int = 80) -> list[Any]:
    """The printable blocks of ``nlbench show``: spec, curves, selection, per-class results."""
    from rich.table import Table

    from nlbench.fileio import read_json_or_none
    from nlbench.result import DamagedResult, read_result
    from nlbench.store import METRICS, RESULT, SPEC, RunDir

    spec = read_json_or_none(folder / SPEC)
    if not isinstance(spec, dict):
        raise UsageError(f"{folder / SPEC} is missing or damaged; this is not a readable run folder.")
    blocks: list[Any] = [f"[bold]run {spec.get('run_id', '?')}[/bold]  {folder}", _spec_text(spec)]
    history, skipped = RunDir(folder).read_metrics()
    if skipped:
        blocks.append(f"warning: {skipped} damaged line(s) of {folder / METRICS} were skipped")
    if history:
        curves = Table(title="Curves (test accuracy %, validation accuracy % on noisy labels)")
        for name in ("phase", "epoch", "train loss", "lr", "test", "val", "val (clean)"):
            curves.add_column(name, justify="left" if name == "phase" else "right")
        for record in history:
            test = record.get("test", {}).get("model")
            val = record.get("val", {}).get("model")
            clean = record.get("val_clean", {}).get("model")
            curves.add_row(record.get("phase", ""), str(record.get("epoch", 0) + 1),
                           _num(record.get("train", {}).get("loss"), ".4f"), _num(record.get("lr"), ".2e"),
                           _num(test, ".2f"), _num(val, ".2f"), _num(clean, ".2f"))
        blocks.append(curves)
    if not (folder / RESULT).exists():
        blocks.append("no result yet: the run is not finished (`nlbench status` shows its state).")
        return blocks
    try:
        result = read_result(folder / RESULT)
        foreign = RunDir(folder).foreign_result(result)
        if foreign:
            raise DamagedResult(f"{folder / RESULT} is not this run's result: {foreign}.")
    except DamagedResult as err:
        blocks.append(f"warning: {err} Training the run again with --force repairs it.")
        return blocks
    blocks.append(_selection_text(result, member))
    blocks.extend(_reference_lines(result, member))
    names = tuple((result.get("final", {}).get("model") or {}).get("class_names", ()))
    if names and result.get("noise", {}).get("transitions"):
        blocks.extend(transition_blocks(result["noise"], names))
    final = result.get("final", {})
    report = final.get("model") if member == "model" else final.get("members", {}).get(member.split("/")[-1])
    if report:
        blocks.extend(_per_class(report, width))
    else:
        blocks.append(f"no per-class results stored for member {member!r}.")
    blocks.extend(_evaluation_lines(folder, result.run_id, result.get("dataset_options") or {}))
    return blocks


def _evaluation_lines(folder: Path, run_id: str, options: dict[str, Any]) -> list[str]:
    """One line per stored evaluation of the model on other data (``nlbench evaluate``)."""
    from rich.markup import escape

    from nlbench.evaluations import read_evaluations, summary_line

    records, damaged = read_evaluations(folder, run_id)
    lines = []
    if records:
        lines.append("evaluations of model.pt (`nlbench evaluate`):\n"
                     + "\n".join(f"  {escape(summary_line(record, options))}" for record in records))
    if damaged:
        lines.append(f"warning: skipped {len(damaged)} damaged or foreign evaluation file(s): "
                     + escape(", ".join(str(p) for p in damaged[:3])))
    return lines


def _reference_lines(result: dict[str, Any], member: str) -> list[str]:
    """The test split's majority-class and chance scores, and a flag if the model answers one class."""
    from nlbench.report.references import dominant_prediction, split_reference

    lines = []
    reference = split_reference(result)
    if reference is not None:
        lines.append("reference (this test split): accuracy: " + reference.describe("accuracy")
                     + f"; balanced accuracy: chance {reference.chance('balanced_accuracy'):.2f}")
    dominant = dominant_prediction(result, "model" if member == "model" else member.split("/")[-1])
    if dominant is not None:
        lines.append(f"[bold]warning[/bold]: the last epoch's model {dominant.describe()}: "
                     f"its accuracy says little beyond the majority class.")
    return lines


def _num(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _spec_text(spec: dict[str, Any]) -> str:
    noise = spec.get("noise", {})
    train = spec.get("train", {})
    lines = [f"method {spec.get('method')}  dataset {spec.get('data', {}).get('name')}  "
             f"noise {noise.get('rate')} {noise.get('mode')} ({noise.get('source')})  seed {spec.get('seed')}",
             "hyperparameters: " + (", ".join(f"{k}={v}" for k, v in sorted(spec.get("hparams", {}).items())) or "none"),
             "training: " + ", ".join(f"{k}={v}" for k, v in sorted(train.items()))]
    return "\n".join(lines)


def _selection_text(result: dict[str, Any], member: str) -> str:
    metrics = result.get("metrics", {})
    summary = metrics.get("model") if member == "model" else metrics.get("members", {}).get(member)
    if not summary:
        return f"no summary for member {member!r}; stored members: {', '.join(sorted(metrics.get('members', {})))}"
    parts = [f"last {summary['last']:.2f}", f"mean of last {summary['k']} {summary['lastk']:.2f}"]
    if "val" in summary:
        parts.append(f"val-selected {summary['val']:.2f} (epoch {summary['val_epoch']})")
    parts.append(f"best {summary['best']:.2f} (epoch {summary['best_epoch']}, selected on the test set: an oracle)")
    scores = summary.get("scores", {}).get("last", {})
    extra = ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if v is not None)
    deployment = result.get("deployment", {})
    return (f"{member} ({deployment.get('deploys', 'deployed model')}): " + "; ".join(parts)
            + (f"\nlast epoch: {extra}" if extra else ""))


def _per_class(report: dict[str, Any], width: int = 80) -> list[Any]:
    """Per-class accuracy and the confusion matrix; where the class names make them wider than
    ``width``, the columns are headed by short unique prefixes, spelled out in a caption."""
    from rich.table import Table

    from nlbench.progress import table_width

    names = report.get("class_names", [])
    accuracy = [_num(report["per_class_accuracy"].get(n), ".1f") for n in names]
    matrix_rows = [(name, *[str(v) for v in row]) for name, row in zip(names, report.get("confusion_matrix", []))]

    def build(headers: list[str]) -> tuple[Any, Any]:
        per_class = Table(title="Per-class test accuracy (%)")
        for header in headers:
            per_class.add_column(header, justify="right")
        per_class.add_row(*accuracy)
        matrix = Table(title="Confusion matrix (rows: true class, columns: predicted)")
        matrix.add_column("true \\ predicted")
        for header in headers:
            matrix.add_column(header, justify="right")
        for row in matrix_rows:
            matrix.add_row(*row)
        return per_class, matrix

    per_class, matrix = build(list(names))
    if max(table_width(per_class), table_width(matrix)) > width:
        short = short_names(names)
        per_class, matrix = build([short[n] for n in names])
        legend = ", ".join(f"{short[n]} = {n}" for n in names if short[n] != n)
        return [per_class, matrix, f"Columns: {legend}."]  # a paragraph: wrapped to the page, not the table
    return [per_class, matrix]


def short_names(names: Any, least: int = 3) -> dict[str, str]:
    """A short, unique prefix of each class name (at least ``least`` letters; longer where two
    names start alike): happiness -> hap, sadness -> sad, surprise -> sur."""
    out = {}
    for name in names:
        length = least
        while length < len(name) and any(o != name and o[:length] == name[:length] for o in names):
            length += 1
        out[name] = name[:length]
    return out
