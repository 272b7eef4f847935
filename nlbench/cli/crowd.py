"""``nlbench crowd infer|simulate|compare``: truth inference from crowd votes (PM, majority, Dawid-Skene)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nlbench.cli.common import ConfigOption, OverwriteOption, output_file, starts_with

#: The most votes `crowd simulate` writes (held in memory while simulated).
MAX_SIMULATED_VOTES = 50_000_000

app = typer.Typer(help="Infer labels from crowd votes (PM as in the CCT paper, majority, Dawid-Skene), "
                       "or simulate a crowd with known truth.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@app.command("infer", short_help="Infer items' labels and annotators' expertise from votes.")
def infer(
    votes: str = typer.Argument(..., help="CSV of votes in long form: columns item, annotator, label."),
    method: str = typer.Option("pm", "--method", help="pm (the CCT paper's), majority or dawid-skene."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Labels CSV to write (item, label, confidence)."),
    as_noise_file: Optional[str] = typer.Option(
        None, "--as-noise-file", help="Noise file to write: the inferred label of every training sample of "
                                      "--dataset (items named as the samples), for `nlbench run --noise-file`."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", "-d", help="With --as-noise-file: the dataset whose training samples the items are "
                                      "(default: [run])."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="With --as-noise-file: the dataset's folder."),
    set_: list[str] = typer.Option(
        [], "--set", help="With --as-noise-file: a setting, e.g. datasets.NAME.options.K=V."),
    config: ConfigOption = None,
    truth: Optional[str] = typer.Option(None, "--truth", help="CSV of true labels (item, label): print the accuracy."),
    pm_normaliser: str = typer.Option("max", "--pm-normaliser", help="PM's errors / max (the paper's) or / sum."),
    overwrite: OverwriteOption = False,
) -> None:
    """Infer each item's label and each annotator's expertise; items inferred "none of the above" are dropped."""
    from nlbench.data import crowd
    from nlbench.data.noise_file import MAGIC
    from nlbench.errors import UsageError
    from nlbench.progress import stdout_console

    if out is None and as_noise_file is None:
        raise UsageError("give --out FILE (the labels as item,label,confidence), --as-noise-file FILE (the labels of "
                         "a dataset's training samples, for `nlbench run --noise-file FILE`), or both.")
    if as_noise_file is None and (dataset or data_root or set_ or config):
        raise UsageError("--dataset, --data-root, --set and --config say which samples --as-noise-file labels; "
                         "give --as-noise-file FILE too, or leave them out.")
    path = output_file(out, starts_with(b"item,label,confidence"), overwrite) if out is not None else None
    noise_path = (output_file(as_noise_file, starts_with(MAGIC.encode()), overwrite, "--as-noise-file")
                  if as_noise_file is not None else None)
    if path is not None and noise_path is not None and path.resolve() == noise_path.resolve():
        raise UsageError(f"--out and --as-noise-file both name {path}; give two files.")
    # The dataset is opened before inference, so a wrong name or folder fails at once.
    data = _training_samples(dataset, data_root, set_, config) if noise_path is not None else None
    table = crowd.read_votes(Path(votes))
    result = crowd.infer(table, method, pm_normaliser)
    items, annotators, labels = table.shape
    console = stdout_console()
    console.print(f"{method}: {items:,} items, {annotators} annotators, {len(table.item):,} votes, {labels} labels; "
                  f"converged after {result.iterations} iteration(s)", markup=False, soft_wrap=True)
    dropped = items - len(crowd.kept_items(table, result))
    if path is not None:
        kept = crowd.write_labels(path, table, result)
        console.print(f"wrote {kept:,} labels to {path}" + (f" ({dropped} items inferred 'none of the above' dropped)"
                                                              if dropped else ""), markup=False, soft_wrap=True)
        console.print(f"annotators' expertise: {crowd.annotators_path(path)}", markup=False, soft_wrap=True)
    if noise_path is not None and data is not None:
        settings = {"source": "crowd", "crowd_method": method,
                    **({"pm_normaliser": pm_normaliser} if method == "pm" else {})}
        _write_crowd_noise_file(console, noise_path, Path(votes), table, result, data, settings, dropped)
    _print_expertise(console, table, result)
    if truth:
        score, scored = crowd.accuracy(table, result, crowd.read_truth(Path(truth)))
        console.print(f"accuracy against {truth}: {score:.2f}% of {scored:,} items", markup=False, soft_wrap=True)


def _training_samples(dataset: Optional[str], data_root: Optional[str], sets: list[str], config: Optional[str]):
    """(spec, dataset) of the dataset as a run opens it (:func:`nlbench.spec.resolve_spec`; the method and
    noise do not matter, only the data)."""
    from nlbench.cli.common import load
    from nlbench.dataset import open_dataset
    from nlbench.spec.resolve import RunRequest, resolve_spec

    cfg, registry = load(config, report=True)
    opened: dict = {}
    spec = resolve_spec(RunRequest(method="standard", dataset=dataset, data_root=data_root, noise=0.0,
                                   noise_source="injected", sets=list(sets)), cfg, registry, opened)
    return spec, open_dataset(registry.dataset(spec.data.plugin_name), spec.data.root, spec.data.options, opened,
                              instance=spec.data.name)


def _write_crowd_noise_file(console, path: Path, votes_path: Path, votes, result, data, settings: dict,
                            dropped: int) -> None:
    """Write the inferred labels as a noise file of the dataset's training samples (nlbench's format).

    Items are matched to samples as noise files are (path relative to the data root, else file
    name, else without RAF-DB's ``_aligned``); labels must be the dataset's class names (case
    ignored). Every training sample needs a label, as ``--noise-file`` requires; items naming no
    training sample (test images) are ignored and counted.
    """
    import nlbench
    from nlbench.data import crowd
    from nlbench.data.noise_file import match_labels, sample_names, samples_sha256, write_noise_file
    from nlbench.errors import DataError
    from nlbench.identity import file_sha256

    spec, dataset = data
    train = dataset.table("train")
    classes = tuple(dataset.class_names)
    by_name = {c.lower(): i for i, c in enumerate(classes)}
    keep = crowd.kept_items(votes, result)
    inferred = [votes.label_names[result.labels[i]] for i in keep]
    unknown = sorted({label for label in inferred if label.strip().lower() not in by_name})
    if unknown:
        raise DataError(f"inferred label(s) {', '.join(map(repr, unknown[:5]))} are not classes of {spec.data.name} "
                        f"({', '.join(classes)}); --as-noise-file needs votes that name the dataset's classes "
                        f"(case ignored).")
    rows = [(votes.item_names[i], by_name[label.strip().lower()]) for i, label in zip(keep, inferred)]
    names = sample_names(train.refs, dataset.root)
    labels, unmatched = match_labels(votes_path, rows, names, what="votes file", allow_missing=True)
    missing = [names[i] for i in (labels < 0).nonzero()[0]]
    if missing:
        gone = f" ({dropped} item(s) were inferred 'none of the above' and dropped)" if dropped else ""
        raise DataError(
            f"the votes give no label to {len(missing)} of the {len(names)} training samples of {spec.data.name} "
            f"(first: {', '.join(missing[:3])}){gone}. A noise file labels every training sample: add votes for "
            f"them, or name the items as the samples are named (their path relative to the data root, as "
            f"`nlbench noise export` writes them).")
    realised = float((labels != train.labels).mean()) if len(labels) else 0.0
    settings = {**settings, "votes": votes_path.name, "votes_sha256": file_sha256(votes_path),
                "dataset": spec.data.name, "dataset_options": dict(spec.data.options),
                "dataset_version": spec.data.version, "data_fingerprint": spec.data.fingerprint,
                "realised_rate": round(realised, 6), "nlbench": nlbench.__version__,
                "samples_sha256": samples_sha256(train, dataset.root)}
    sha = write_noise_file(path, names, labels, classes, settings)
    console.print(f"wrote the inferred labels of {len(names):,} training samples of {spec.data.name} to {path} "
                  f"({100 * realised:.1f}% differ from the dataset's own labels)"
                  + (f"; {unmatched:,} inferred item(s) name no training sample and were left out"
                     if unmatched else ""),
                  markup=False, soft_wrap=True)
    console.print(f"sha256 {sha}; train on them with --noise-file {path}", markup=False, soft_wrap=True)


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
