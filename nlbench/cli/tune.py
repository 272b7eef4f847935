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
    noise_source: Optional[str] = typer.Option(None, "--noise-source", help="injected (default) or dataset."),
    noise_file: Optional[str] = typer.Option(None, "--noise-file", help="Train every run on this noise file's labels."),
    noise_file_base: Optional[int] = typer.Option(None, "--noise-file-base",
                                                  help="First class number in a 'name label' list."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="ResNet-18 checkpoint file for every run."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
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
    slurm_mem: Optional[int] = typer.Option(None, "--slurm-mem", help="Memory per SLURM job, GB (default: the cluster's)."),
    status: bool = typer.Option(False, "--status", help="Show the studies of the store and their progress; train nothing."),
    export: Optional[str] = typer.Option(None, "--export", help="Write the chosen configurations to this TOML file."),
    config: ConfigOption = None,
    runs: RunsDirOption = None,
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Decoded-image cache (default: ~/.cache/nlbench)."),
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
    from nlbench.tuned import store_outcomes

    cfg, registry = load(config, report=True)
    folder = runs_dir(runs, cfg)
    if status:
        _print_status(folder)
        return
    request = TuneRequest(
        methods=expand_methods(split_items(methods) or ["standard"]),
        base=RunRequest(dataset=dataset, noise=noise, noise_mode=noise_mode, noise_source=noise_source,
                        epochs=epochs, data_root=data_root, pretrained=pretrained, device=device, cache_dir=cache_dir,
                        noise_file=noise_file, noise_file_base=noise_file_base, sets=list(set_)),
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
        slurm_mem_gb=slurm_mem, wait=True,  # a trial is scored when its runs end
    )
    interrupt_on_sigterm()

    def run_batch(specs: list[Any], observers: dict[str, list[Any]]) -> dict[str, Any]:
        return _train(specs, executor_cls, dataclasses.replace(options, observers=observers), reporter)

    outcomes = run_tuning(request, cfg, registry, folder, run_batch, reporter.message, per_round=jobs or 1)
    context = _context(request)
    store_outcomes(folder, outcomes, context)
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


def print_tuned(outcomes: list[Any], context: dict[str, Any], fmt: str = "rich") -> None:
    """The default and the tuned configuration of every method on the evaluation seeds, paired."""
    from nlbench.report.tuned import print_table, tuned_table

    print_table(tuned_table(outcomes, context), fmt)


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
    from nlbench.tune.study import JOURNAL, require_optuna
    from nlbench.tuned import describe_point

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
