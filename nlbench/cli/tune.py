"""``nlbench tune``: an equal tuning budget for every method, chosen on noisy validation, then compared."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer

from nlbench.cli.common import ConfigOption, RunsDirOption, parse_numbers, split_items


def tune(
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods to tune (groups as in sweep)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset of every run (default synthfer)."),
    noise: Optional[float] = typer.Option(None, "--noise", "-n", help="Label-noise rate of every run."),
    noise_mode: Optional[str] = typer.Option(None, "--noise-mode", help="Noise mode of every run."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Training epochs of every run (trials too)."),
    set_: list[str] = typer.Option([], "--set", help="A fixed setting of every run, e.g. train.val_fraction=0.2."),
    budget: float = typer.Option(20, "--budget", help="Budget per method: trials, or network-epochs (--budget-unit)."),
    budget_unit: str = typer.Option("trials", "--budget-unit", help="trials (default) or network-epochs."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Evaluation seeds (default 1,2,3)."),
    tune_seeds: Optional[str] = typer.Option(None, "--tune-seeds",
                                             help="Seeds of the trials (default 101): never evaluation seeds."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (default) or random."),
    pruner: str = typer.Option("median", "--pruner",
                               help="median (default), halving or none: stop poor trials from their per-epoch "
                                    "noisy-validation accuracy."),
    sampler_seed: int = typer.Option(0, "--sampler-seed", help="Seed of the sampler."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Folder holding the dataset's files."),
    executor: str = typer.Option("local", "--executor", help="local (default), slurm or submitit-local."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Runs at once (trials of all methods share them)."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="SLURM partition."),
    slurm_time: int = typer.Option(240, "--slurm-time", help="SLURM time limit per job, minutes."),
    slurm_cpus: Optional[int] = typer.Option(None, "--slurm-cpus", help="CPUs per SLURM job."),
    slurm_gpus: int = typer.Option(0, "--slurm-gpus", help="GPUs per SLURM job."),
    status: bool = typer.Option(False, "--status", help="Show the studies of the store and their progress; train nothing."),
    export: Optional[str] = typer.Option(None, "--export", help="Write the chosen configurations to this TOML file."),
    config: ConfigOption = None,
    runs: RunsDirOption = None,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output on stderr."),
) -> None:
    """Tune every method with the same budget on noisy validation, then compare tuned and default."""
    from nlbench.cli.common import load, runs_dir
    from nlbench.errors import UsageError
    from nlbench.executors import ExecutorOptions, interrupt_on_sigterm
    from nlbench.progress import make_sweep_reporter
    from nlbench.spec.resolve import RunRequest
    from nlbench.sweep.grid import expand_methods
    from nlbench.tune.study import TuneRequest, require_optuna, run_tuning

    cfg, registry = load(config, report=True)
    folder = runs_dir(runs, cfg)
    if status:
        _print_status(folder)
        return
    request = TuneRequest(
        methods=expand_methods(split_items(methods) or ["standard"]),
        base=RunRequest(dataset=dataset, noise=noise, noise_mode=noise_mode, epochs=epochs, data_root=data_root,
                        sets=list(set_)),
        budget=budget, unit=budget_unit, seeds=parse_numbers(seeds, int, "--seeds") or [1, 2, 3],
        tune_seeds=parse_numbers(tune_seeds, int, "--tune-seeds") or [101], sampler=sampler,
        sampler_seed=sampler_seed, pruner=pruner,
    )
    request.check()
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}.")
    for name in request.methods:
        registry.method(name)  # an unknown name: one clear error before any study exists
    require_optuna()
    executor_cls = registry.executor(executor)
    reporter = make_sweep_reporter(quiet)
    options = ExecutorOptions(
        jobs=jobs, runs_dir=str(folder), plugin_paths=[str(p) for p in cfg.plugin_paths], quiet=quiet,
        slurm_partition=slurm_partition, slurm_time_min=slurm_time, slurm_cpus=slurm_cpus, slurm_gpus=slurm_gpus,
        wait=True,  # a trial is scored when its runs end
    )
    interrupt_on_sigterm()

    def run_batch(specs: list[Any], observers: dict[str, list[Any]]) -> dict[str, Any]:
        return _train(specs, executor_cls, dataclasses.replace(options, observers=observers), reporter)

    outcomes = run_tuning(request, cfg, registry, folder, run_batch, reporter.message, per_round=jobs or 1)
    context = _context(request)
    _store(folder, outcomes, context)
    print_tuned(outcomes, context)
    if export:
        _export(Path(export), outcomes, request)
        reporter.message(f"wrote the chosen configurations to {export}")


def _train(specs: list[Any], executor_cls: type, options: Any, reporter: Any) -> dict[str, Any]:
    """Train ``specs`` (skipping done ones) and return run id -> result, or ``{"stopped": (epoch,
    epochs)}`` for a run its trial's pruner stopped; a run that did not finish is left out."""
    from nlbench.fileio import read_json_or_none
    from nlbench.store import RESULT
    from nlbench.sweep.worker import run_dir_of

    unique = {spec.run_id: spec.to_json() for spec in specs}
    results: dict[str, Any] = {}
    todo = []
    for run_id, spec_json in unique.items():
        run = run_dir_of(spec_json, options)
        if run.is_done():
            results[run_id] = read_json_or_none(run.path / RESULT)
        else:
            todo.append(spec_json)
    if todo:
        for report in executor_cls(options).run(todo, reporter):
            if report.outcome in ("done", "skipped"):
                results[report.run_id] = read_json_or_none(Path(report.path) / RESULT)
            elif report.outcome == "stopped":
                status = run_dir_of(unique[report.run_id], options).state().status
                results[report.run_id] = {"run_id": report.run_id,
                                          "stopped": (int(status.get("epoch", 0)), int(status.get("epochs", 1)))}
    return results


def _context(request: Any) -> dict[str, Any]:
    """What a table of tuned methods says about how they were tuned."""
    base = request.base
    return {"budget": request.budget, "unit": request.unit, "sampler": request.sampler, "pruner": request.pruner,
            "tune_seeds": request.tune_seeds, "seeds": request.seeds, "dataset": base.dataset or "default dataset",
            "noise": base.noise, "noise_mode": base.noise_mode, "epochs": base.epochs, "sets": base.sets}


#: Where ``nlbench tune`` stores each method's outcome, for ``nlbench table --tuned``.
OUTCOMES = Path("tune") / "outcomes"


def _store(folder: Path, outcomes: list[Any], context: dict[str, Any]) -> None:
    """Each method's outcome as JSON in the store (replaced by a later tune of the same study)."""
    from nlbench.fileio import atomic_write_json

    for outcome in outcomes:
        (folder / OUTCOMES).mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / OUTCOMES / f"{outcome.study}.json",
                          {"outcome": dataclasses.asdict(outcome), "context": context})


def load_tuned(folder: Path, methods: list[str] | None = None) -> list[tuple[dict[str, Any], list[Any]]]:
    """The stored outcomes of ``nlbench tune`` in a store, grouped by how they were tuned: (context, outcomes)."""
    import json

    from nlbench.fileio import read_json_or_none
    from nlbench.tune.study import MethodOutcome

    groups: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    for path in sorted((folder / OUTCOMES).glob("*.json")):
        data = read_json_or_none(path)
        if not isinstance(data, dict) or not isinstance(data.get("outcome"), dict):
            continue  # a damaged file: the study itself is in the journal, `tune` writes it again
        fields = dict(data["outcome"])
        for key in ("default", "tuned"):  # JSON object keys are strings; seeds are ints
            fields[key] = {int(seed): value for seed, value in (fields.get(key) or {}).items()}
        try:
            outcome = MethodOutcome(**fields)
        except TypeError:
            continue
        if methods and outcome.method not in methods:
            continue
        context = data.get("context") or {}
        groups.setdefault(json.dumps(context, sort_keys=True), (context, []))[1].append(outcome)
    return list(groups.values())


def print_tuned(outcomes: list[Any], context: dict[str, Any]) -> None:
    """The default and the tuned configuration of every method on the evaluation seeds, paired."""
    import numpy as np
    from rich.table import Table

    from nlbench.progress import keep_words_whole, stdout_console
    from nlbench.report.statistics import paired_comparison
    from nlbench.tune.space import describe_point

    noise = f", noise {context['noise']:g}" if context.get("noise") is not None else ""
    table = Table(title=f"Tuned vs default on {context.get('dataset')}{noise}: test accuracy (%), last epoch, "
                        f"seeds {', '.join(map(str, context.get('seeds', [])))}", title_justify="left")
    for column in ("method", "trials", "default", "tuned", "tuned - default", "chosen (val %)"):
        table.add_column(column, justify="left" if column in ("method", "chosen (val %)") else "right")

    def cell(values: dict[int, float]) -> str:
        if not values:
            return "–"
        data = np.array(list(values.values()))
        return f"{data.mean():.2f} ± {data.std(ddof=1):.2f}" if data.size > 1 else f"{data[0]:.2f}"

    for outcome in outcomes:
        paired = sorted(set(outcome.default) & set(outcome.tuned))
        diff = "–"
        if paired:
            comparison = paired_comparison(np.array([outcome.tuned[s] for s in paired]),
                                           np.array([outcome.default[s] for s in paired]))
            diff = f"{comparison.mean:+.2f}" + (f" p={comparison.p:.3f}" if comparison.p is not None else "")
        chosen = "none scored" if outcome.chosen is None else (
            describe_point(outcome.chosen)
            + f" ({outcome.val:.2f})")
        spent = f"{outcome.trials}" + "".join(f", {n} {what}" for n, what in ((outcome.pruned, "pruned"),
                                                                               (outcome.failed, "failed")) if n)
        if context.get("unit") != "trials":
            spent += f", {outcome.spent:g} net-ep"
        table.add_row(outcome.method, spent, cell(outcome.default), cell(outcome.tuned), diff, chosen)
    saved = sum(outcome.saved for outcome in outcomes)
    spent = sum(outcome.spent for outcome in outcomes) if context.get("unit") != "trials" else None
    note = (f"Budget {context.get('budget', 0):g} {context.get('unit')} per method, "
            f"{context.get('sampler')} sampler, {context.get('pruner')} pruner"
            + (f" (pruning saved about {saved:.0f} network-epochs"
               + (f" beside the {spent:g} spent)" if spent is not None else ")") if saved else "")
            + f"; trials on seed(s) {', '.join(map(str, context.get('tune_seeds', [])))}, chosen on the noisy "
            "validation split (never the test set); tuned - default: mean paired difference, p: paired t-test "
            "over the evaluation seeds.")
    console = stdout_console()
    console.print(keep_words_whole(table, console.width))
    console.print(note, width=min(console.width, 80))  # a paragraph at reading width, not the table's


def _export(path: Path, outcomes: list[Any], request: Any) -> None:
    """The chosen configurations as TOML: per method its ``--set`` items, score and budget."""
    from nlbench.fileio import atomic_write_bytes
    from nlbench.tune.space import set_items

    lines = [f"# chosen by nlbench tune: budget {request.budget:g} {request.unit} per method, "
             f"{request.sampler} sampler, tuning seeds {request.tune_seeds}; reuse with --set ITEM for each item"]
    for outcome in outcomes:
        if outcome.chosen is None:
            continue
        items = ", ".join(f'"{item}"' for item in set_items(outcome.chosen))
        lines += ["", f"[chosen.{outcome.method}]", f'study = "{outcome.study}"', f"val = {outcome.val:.4f}",
                  f"trials = {outcome.trials}", f"set = [{items}]"]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _print_status(folder: Path) -> None:
    """Every study of the store: trials scored, failed, started; the best validation score so far."""
    from rich.table import Table

    from nlbench.progress import keep_words_whole, stdout_console
    from nlbench.tune.space import describe_point
    from nlbench.tune.study import JOURNAL, require_optuna

    optuna = require_optuna()
    path = folder / JOURNAL
    console = stdout_console()
    if not path.is_file():
        console.print(f"no tuning studies in {folder} (nlbench tune starts them)")
        return
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    storage = JournalStorage(JournalFileBackend(str(path)))
    table = Table(title=f"tuning studies in {folder}", title_justify="left")
    for column in ("study", "trials", "best val %", "best values"):
        table.add_column(column, justify="right" if column == "best val %" else "left")
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        count = {state: sum(t.state == state for t in trials) for state in (TrialState.COMPLETE, TrialState.FAIL,
                                                                             TrialState.RUNNING)}
        scored = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(scored, key=lambda t: t.value) if scored else None
        values = describe_point(best.params) if best else ""
        pruned = sum("pruned_at" in t.user_attrs for t in trials)
        trials_text = ", ".join(f"{n} {what}" for n, what in (
            (count[TrialState.COMPLETE], "scored"), (pruned, "pruned"), (count[TrialState.FAIL], "failed"),
            (count[TrialState.RUNNING], "running")) if n or what == "scored")
        table.add_row(summary.study_name, trials_text, f"{best.value:.2f}" if best else "–", values)
    console.print(keep_words_whole(table, console.width))
