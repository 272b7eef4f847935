"""``nlbench evaluate RUN --dataset NAME``: a stored model on another dataset or split, stored beside the run."""

from __future__ import annotations

from typing import Any, Optional

import typer

from nlbench.cli.common import ConfigOption, RunsDirOption


def evaluate(
    run: str = typer.Argument(..., help="A run folder, or a run id (or its first characters) in the store."),
    dataset: str = typer.Option(..., "--dataset", "-d",
                                help="Dataset to evaluate on: a plugin or configured instance (`nlbench datasets`)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Folder holding that dataset's files."),
    split: str = typer.Option("test", "--split", help="test (default) or train."),
    maps: list[str] = typer.Option(
        [], "--map", help="TARGET=MODEL: count the target's class TARGET as the model's class MODEL (repeatable)."),
    drop_unknown: bool = typer.Option(
        False, "--drop-unknown", help="Leave out images of target classes the model lacks (their count is shown)."),
    set_: list[str] = typer.Option(
        [], "--set", help="An option of the target dataset, e.g. datasets.synthfer.options.seed=5 (repeatable)."),
    device: str = typer.Option("auto", "--device", help="auto (default: CUDA if present), cpu or cuda."),
    runs: RunsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Evaluate a finished run's model on another dataset or split; the scores are stored beside the run.

    Classes are matched by name. The result goes to <run>/evaluations/ (the same target evaluated
    again replaces it) and shows in `nlbench show` and `nlbench table --layout cross`.
    """
    from pathlib import Path

    from nlbench.cli.common import load
    from nlbench.cli.show import locate_run
    from nlbench.dataset import SPLITS
    from nlbench.errors import UsageError
    from nlbench.evaluations import write_evaluation
    from nlbench.progress import stderr_console, stdout_console
    from nlbench.train.assemble import resolve_device
    from nlbench.train.transfer import evaluate_model, load_model, match_classes, open_target, parse_maps

    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    mapping = parse_maps(maps)
    cfg, registry = load(config, report=True)
    folder = locate_run(run, runs, cfg)
    target, plugin = open_target(cfg, registry, dataset, data_root, list(set_))
    model = load_model(folder, registry, resolve_device(device))
    match = match_classes(model.class_names, tuple(target.class_names), mapping, drop_unknown,
                          f"the model (run {model.run_id}, {model.spec.data.name})", f"{dataset} ({split})")
    stderr_console().print(f"evaluating run {model.run_id} ({model.spec.method} on {model.spec.data.name}) on "
                           f"{dataset} {split}, device {model.device}", markup=False)
    defaults = cfg.run_defaults()
    record = evaluate_model(model, target, plugin, split, match,
                            Path(defaults.cache_dir).expanduser() if defaults.cache_dir else None)
    path = write_evaluation(folder, record)
    out = stdout_console()
    for block in describe(record, model.result):
        out.print(block)
    out.print(f"stored in {path}", soft_wrap=True, markup=False)


def describe(record: dict[str, Any], result: dict[str, Any]) -> list[Any]:
    """The printable blocks of one evaluation: scores, notes, per-class accuracy, confusion (80 columns)."""
    import textwrap

    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from nlbench.evaluations import target_text
    from nlbench.report.references import SplitReference

    scores, target, classes = record["scores"], record["target"], record["classes"]
    report = record["report"]
    names = report["class_names"]
    matrix = report["confusion_matrix"]
    support = [sum(row) for row in matrix]
    predicted = [sum(column) for column in zip(*matrix)]

    def num(value: Any) -> str:
        return "–" if value is None else f"{value:.2f}"

    lines = [f"run {record['run_id']}: {record['method']} trained on {record['trained_on']}",
             f"evaluated on {target_text(record, result.get('dataset_options') or {})}: "
             f"{record['samples']:,} images",
             f"accuracy {num(scores['accuracy'])}%  balanced accuracy {num(scores.get('balanced_accuracy'))}%  "
             f"macro-F1 {num(scores.get('macro_f1'))}%  ECE {num(scores.get('ece'))}%"]
    present = [(n, s) for n, s in zip(names, support) if s]
    if present:
        reference = SplitReference(sum(s for _, s in present), tuple(s for _, s in present),
                                   tuple(n for n, _ in present))
        lines.append(f"reference: {reference.describe('accuracy')}")
    if classes["map"]:
        lines.append("classes mapped: " + ", ".join(f"{t} -> {m}" for t, m in classes["map"].items()))
    if classes["dropped"]:
        lines.append(f"note: {record['dropped_samples']:,} of {record['split_size']:,} images left out "
                     f"(classes the model lacks): " + ", ".join(f"{n} ({c:,})" for n, c in classes["dropped"].items()))
    if classes["model_only"]:
        lines.append(f"note: the model also has classes the target lacks: {', '.join(classes['model_only'])}; its "
                     f"{record['predicted_outside']:,} predictions there count as wrong.")
    if record.get("own_data") and target["split"] == "test":
        last = result["metrics"]["model"]["last"]
        lines.append(f"note: this is the run's own test split; the run stored {last:.2f}% for its last epoch.")
    if record.get("own_data") and target["split"] == "train":
        lines.append("note: the model was trained on this split (with its noisy labels, less the held-out "
                     "validation images): this measures fitting, not generalisation.")
    per_class = Table(title="Per-class accuracy (%)", box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
    for column in ("class", "images", "correct", "accuracy", "predicted"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for i, name in enumerate(names):
        value = report["per_class_accuracy"].get(name)
        per_class.add_row(escape(name), f"{support[i]:,}", f"{matrix[i][i]:,}",
                          "–" if value is None else f"{value:.1f}", f"{predicted[i]:,}")
    short = short_names(names)
    confusion = Table(title="Confusion (rows: true class, columns: predicted)", box=box.SIMPLE_HEAD,
                      padding=(0, 1), title_justify="left")
    confusion.add_column("true")
    for name in short:
        confusion.add_column(escape(name), justify="right")
    for i, name in enumerate(names):
        if support[i]:  # a model class no image counts as has an empty row
            confusion.add_row(escape(name), *[str(v) for v in matrix[i]])
    text = "\n".join(textwrap.fill(line, 80, subsequent_indent="  ", break_on_hyphens=False) for line in lines)
    blocks: list[Any] = [escape(text), per_class, confusion]
    if short != list(names):
        legend = ", ".join(f"{s} = {n}" for s, n in zip(short, names) if s != n)
        blocks.append(escape(textwrap.fill(f"columns: {legend}", 80, break_on_hyphens=False)))
    return blocks


def short_names(names: list[str], width: int = 5) -> list[str]:
    """Column headings of at most ``width`` characters: the names cut short, or c1..cK when that makes two equal."""
    cut = [name[:width] for name in names]
    return cut if len(set(cut)) == len(cut) else [f"c{i + 1}" for i in range(len(names))]
