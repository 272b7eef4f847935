"""``nlbench crowd infer|simulate|compare``: truth inference from crowd votes (PM, majority, Dawid-Skene)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nlbench.cli.common import OverwriteOption, output_file, starts_with

#: The most votes `crowd simulate` writes (held in memory while simulated).
MAX_SIMULATED_VOTES = 50_000_000

app = typer.Typer(help="Infer labels from crowd votes (PM as in the CCT paper, majority, Dawid-Skene), "
                       "or simulate a crowd with known truth.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@app.command("infer", short_help="Infer items' labels and annotators' expertise from votes.")
def infer(
    votes: str = typer.Argument(..., help="CSV of votes in long form: columns item, annotator, label."),
    method: str = typer.Option("pm", "--method", help="pm (the CCT paper's), majority or dawid-skene."),
    out: str = typer.Option(..., "--out", "-o", help="Labels CSV to write (item, label, confidence)."),
    truth: Optional[str] = typer.Option(None, "--truth", help="CSV of true labels (item, label): print the accuracy."),
    pm_normaliser: str = typer.Option("max", "--pm-normaliser", help="PM's errors / max (the paper's) or / sum."),
    overwrite: OverwriteOption = False,
) -> None:
    """Infer each item's label and each annotator's expertise; items inferred "none of the above" are dropped."""
    from nlbench.data import crowd
    from nlbench.progress import stdout_console

    path = output_file(out, starts_with(b"item,label,confidence"), overwrite)
    table = crowd.read_votes(Path(votes))
    result = crowd.infer(table, method, pm_normaliser)
    kept = crowd.write_labels(path, table, result)
    items, annotators, labels = table.shape
    console = stdout_console()
    console.print(f"{method}: {items:,} items, {annotators} annotators, {len(table.item):,} votes, {labels} labels; "
                  f"converged after {result.iterations} iteration(s)", markup=False, soft_wrap=True)
    dropped = items - kept
    console.print(f"wrote {kept:,} labels to {path}" + (f" ({dropped} items inferred 'none of the above' dropped)"
                                                          if dropped else ""), markup=False, soft_wrap=True)
    console.print(f"annotators' expertise: {crowd.annotators_path(path)}", markup=False, soft_wrap=True)
    _print_expertise(console, table, result)
    if truth:
        score, scored = crowd.accuracy(table, result, crowd.read_truth(Path(truth)))
        console.print(f"accuracy against {truth}: {score:.2f}% of {scored:,} items", markup=False, soft_wrap=True)


def _print_expertise(console, table, result, limit: int = 20) -> None:
    from rich.table import Table

    view = Table(title="Annotators (highest expertise first)")
    for name in ("annotator", "expertise", "errors", "votes"):
        view.add_column(name, justify="left" if name == "annotator" else "right")
    votes = [int(v) for v in __import__("numpy").bincount(table.annotator, minlength=table.shape[1])]
    order = sorted(range(table.shape[1]), key=lambda a: -result.expertise[a])
    for a in order[:limit]:
        view.add_row(table.annotator_names[a], f"{result.expertise[a] + 0.0:.3f}", str(int(result.errors[a])),
                     str(votes[a]))
    if len(order) > limit:
        view.caption = f"{len(order) - limit} more in the annotators file"
    console.print(view)


@app.command("compare", short_help="Score every inference method against known truth.")
def compare(
    votes: str = typer.Argument(..., help="CSV of votes (item, annotator, label)."),
    truth: str = typer.Option(..., "--truth", help="CSV of true labels (item, label)."),
) -> None:
    """Accuracy of every inference method against known truth (e.g. a simulated crowd)."""
    from rich.table import Table

    from nlbench.data import crowd
    from nlbench.progress import stdout_console

    table = crowd.read_votes(Path(votes))
    known = crowd.read_truth(Path(truth))
    view = Table(title=f"Truth inference on {Path(votes).name}: accuracy against {Path(truth).name}")
    for name in ("method", "accuracy %", "items", "iterations"):
        view.add_column(name, justify="left" if name == "method" else "right")
    for method, normaliser in (("majority", "max"), ("pm", "max"), ("pm", "sum"), ("dawid-skene", "max")):
        result = crowd.infer(table, method, normaliser)
        score, scored = crowd.accuracy(table, result, known)
        name = {"pm": f"pm (errors / {normaliser}{', the paper' if normaliser == 'max' else ''})"}.get(method, method)
        view.add_row(name, f"{score:.2f}", f"{scored:,}", str(result.iterations))
    stdout_console().print(view)


@app.command("simulate", short_help="Write a simulated crowd with known truth.")
def simulate(
    out: str = typer.Option(..., "--out", "-o", help="Votes CSV to write (item, annotator, label)."),
    truth_out: Optional[str] = typer.Option(None, "--truth-out", help="Truth CSV (default: OUT with .truth.csv)."),
    items: int = typer.Option(1000, "--items", help="Items (faces)."),
    classes: int = typer.Option(7, "--classes", help="Classes."),
    annotators: int = typer.Option(16, "--annotators", help="Annotators (the paper's FEC crowd had 16)."),
    votes_per_item: int = typer.Option(5, "--votes-per-item", help="Annotators who label each item."),
    experts: float = typer.Option(0.25, "--experts", help="Share of expert annotators."),
    ordinary: float = typer.Option(0.40, "--ordinary", help="Share of ordinary annotators."),
    spammers: float = typer.Option(0.25, "--spammers", help="Share of spammers (random votes)."),
    adversarial: float = typer.Option(0.10, "--adversarial", help="Share of adversarial annotators (a fixed wrong class)."),
    expert_accuracy: float = typer.Option(0.9, "--expert-accuracy", help="An expert's accuracy on an easy item."),
    ordinary_accuracy: float = typer.Option(0.6, "--ordinary-accuracy", help="An ordinary annotator's accuracy."),
    difficulty: float = typer.Option(0.2, "--difficulty", help="Mean chance that a vote on an item is a guess."),
    seed: int = typer.Option(1, "--seed", help="Seed of the simulation."),
    overwrite: OverwriteOption = False,
) -> None:
    """Write a simulated crowd with known truth (and each annotator's kind) for comparing inference methods."""
    from nlbench.data import crowd
    from nlbench.errors import UsageError
    from nlbench.fileio import atomic_write_bytes
    from nlbench.progress import stdout_console

    if not 1 <= items * max(1, votes_per_item) <= MAX_SIMULATED_VOTES or min(classes, annotators) < 1:
        raise UsageError(f"--items x --votes-per-item must be between 1 and {MAX_SIMULATED_VOTES:,} "
                         f"(got {items:,} x {votes_per_item}), and --classes and --annotators at least 1.")
    if not 0.0 < difficulty < 1.0:
        raise UsageError(f"--difficulty must be in (0, 1) (the mean of a Beta distribution), got {difficulty}.")
    for name, value in (("--expert-accuracy", expert_accuracy), ("--ordinary-accuracy", ordinary_accuracy)):
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{name} must be in [0, 1], got {value}.")
    design = crowd.CrowdDesign(items, classes, annotators, votes_per_item, experts, ordinary, spammers, adversarial,
                               expert_accuracy, ordinary_accuracy, difficulty, seed)
    votes, truth, kinds = crowd.simulate(design)
    path = output_file(out, starts_with(b"item,annotator,label"), overwrite)
    truth_path = output_file(truth_out or str(path.with_name(path.stem + ".truth.csv")), starts_with(b"item,label"),
                             overwrite, "--truth-out")
    atomic_write_bytes(path, ("item,annotator,label\n" + "".join(f"{i},{a},{v}\n" for i, a, v in votes)).encode())
    atomic_write_bytes(truth_path, ("item,label\n" + "".join(f"{i},{v}\n" for i, v in truth.items())).encode())
    kinds_path = path.with_name(path.stem + ".kinds.csv")
    atomic_write_bytes(kinds_path, ("annotator,kind\n" + "".join(f"{a},{k}\n" for a, k in kinds)).encode())
    stdout_console().print(f"wrote {len(votes):,} votes on {items:,} items by {annotators} annotators to {path}; "
                           f"truth in {truth_path}, annotator kinds in {kinds_path}", markup=False, soft_wrap=True)
