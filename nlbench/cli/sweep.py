"""``nlbench sweep``: expand a grid of runs, say what is done, train what is missing, print the table."""

from __future__ import annotations

from typing import Optional

import typer

from nlbench.cli.common import ConfigOption, RunsDirOption, parse_numbers, split_items


def sweep(
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="A named grid of benchmark.toml ([sweeps.NAME])."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods, e.g. standard,cct; all = the paper's "
                                   "seven, modern = eac,rul, fer2023 = lanet,nla,resup,dmue, lnl = "
                                   "gce,sce,elr,dividemix; join groups with +."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Comma-separated datasets."),
    noise: Optional[str] = typer.Option(None, "--noise", help="Comma-separated noise rates, e.g. 0,0.2,0.4."),
    noise_modes: Optional[str] = typer.Option(None, "--noise-modes", help="Comma-separated noise modes."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 1,2,3."),
    set_: list[str] = typer.Option(
        [], "--set", help="A setting for every run; key=a,b,c makes it an axis of the grid (repeatable)."
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Training epochs of every run."),
    noise_source: Optional[str] = typer.Option(None, "--noise-source", help="injected (default) or dataset."),
    noise_file: Optional[str] = typer.Option(None, "--noise-file", help="Every run trains on this noise file's labels."),
    noise_file_base: Optional[int] = typer.Option(None, "--noise-file-base", help="First class number of a list file."),
    data_root: list[str] = typer.Option(
        [], "--data-root", help="Data folder: PATH for every dataset, or NAME=PATH for one (repeatable)."
    ),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="ResNet-18 checkpoint file for every run."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
    executor: str = typer.Option("local", "--executor", help="local (default), slurm, submitit-local or a plugin's."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", help="Runs at once (local: default one per GPU, or one using every core)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List every run and its state; train nothing."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="SLURM partition."),
    slurm_time: int = typer.Option(240, "--slurm-time", help="SLURM time limit per job, minutes (requeued after)."),
    slurm_gpus: int = typer.Option(0, "--slurm-gpus", help="GPUs per SLURM job."),
    slurm_cpus: Optional[int] = typer.Option(None, "--slurm-cpus", help="CPUs per SLURM job (default 4)."),
    slurm_mem: Optional[int] = typer.Option(None, "--slurm-mem", help="Memory per SLURM job, GB (default: the cluster's)."),
    wait: Optional[bool] = typer.Option(None, "--wait/--no-wait", help="Wait for submitit jobs (default: not on SLURM)."),
    keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint", help="Keep finished runs' resumable checkpoints."),
    force: bool = typer.Option(False, "--force",
                               help="Train again the done runs whose method or dataset plugin file changed since."),
    show_table: bool = typer.Option(True, "--table/--no-table", help="Print the comparison table of the grid at the end."),
    config: ConfigOption = None,
    runs: RunsDirOption = None,
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Decoded-image cache (default: ~/.cache/nlbench)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output on stderr."),
    logger: list[str] = typer.Option(
        [], "--logger", help="Follow every run's curves with a logger: tensorboard, or a plugin's (repeatable)."),
) -> None:
    """Train a grid of runs (methods x datasets x noise x seeds x --set axes), skipping what is done."""
    import time

    from nlbench.cli.common import load, runs_dir
    from nlbench.code_identity import stale_text
    from nlbench.errors import RunFailed, UsageError
    from nlbench.executors import ExecutorOptions, interrupt_on_sigterm
    from nlbench.progress import make_sweep_reporter, stdout_console
    from nlbench.sweep.grid import SweepRequest, apply_preset, count_states, expand, grid_runs, parse_data_roots

    cfg, registry = load(config, report=True)
    request = SweepRequest(
        methods=split_items(methods), datasets=split_items(datasets), noise=parse_numbers(noise, float, "--noise"),
        noise_modes=split_items(noise_modes), seeds=parse_numbers(seeds, int, "--seeds"), sets=list(set_),
        data_roots=parse_data_roots(data_root), epochs=epochs, noise_source=noise_source, pretrained=pretrained,
        device=device, cache_dir=cache_dir, noise_file=noise_file, noise_file_base=noise_file_base,
    )
    if preset:
        request = apply_preset(request, cfg, preset)
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}.")
    for flag, value, least in (("--slurm-time", slurm_time, 1), ("--slurm-cpus", slurm_cpus, 1),
                               ("--slurm-gpus", slurm_gpus, 0), ("--slurm-mem", slurm_mem, 1)):
        if value is not None and value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}.")
    executor_cls = registry.executor(executor)
    registry.make_loggers(logger)  # an unknown logger or a missing package: exit 2 before any run
    folder = runs_dir(runs, cfg)
    specs = expand(request, cfg, registry)
    grid = grid_runs(specs, folder)
    counts = count_states(grid)
    reporter = make_sweep_reporter(quiet)  # each executor draws its runs' progress
    name = f"preset {preset}" if preset else "grid"
    reporter.message(
        f"{name}: {len(grid)} runs: {counts['done']} done, {counts['interrupted']} interrupted, "
        f"{counts['running']} running elsewhere, {counts['failed']} failed, {counts['todo']} to do\nstore: {folder}"
    )
    stale = _stale_runs(grid)
    if stale:
        files = sorted({name for changes in stale.values() for name in changes})
        import sys

        # A warning, not progress: shown with --quiet too.
        print(f"warning: {len(stale)} done run(s) were {stale_text(files)} than installed now: "
              + ("--force trains them again." if force else "reused as they are; --force trains them again."),
              file=sys.stderr)
    if dry_run:
        _print_grid(stdout_console(), grid)
        return
    retrain = set(stale) if force else set()
    todo = [run.spec.to_json() for run in grid if run.state.state != "done" or run.spec.run_id in retrain]
    options = ExecutorOptions(
        jobs=jobs, runs_dir=str(folder), plugin_paths=[str(p) for p in cfg.plugin_paths],
        keep_checkpoint=keep_checkpoint, force_ids=sorted(retrain), quiet=quiet,
        slurm_partition=slurm_partition, slurm_time_min=slurm_time,
        slurm_gpus=slurm_gpus, slurm_cpus=slurm_cpus, slurm_mem_gb=slurm_mem, wait=wait, loggers=list(logger),
    )
    interrupt_on_sigterm()  # a killed sweep stops its workers and leaves their runs resumable
    began = time.perf_counter()
    reports = executor_cls(options).run(todo, reporter) if todo else []
    outcomes = {o: sum(r.outcome == o for r in reports)
                for o in ("done", "skipped", "locked", "failed", "interrupted", "submitted")}
    resumed = sum(r.outcome == "done" and r.resumed.startswith("resumed") for r in reports)
    restarted = sum(r.outcome == "done" and r.resumed.startswith("restarted") for r in reports)
    again = ", ".join(part for part in (f"{resumed} resumed from a checkpoint" if resumed else "",
                                        f"{restarted} restarted without one" if restarted else "") if part)
    reporter.message(
        f"{name}: trained {outcomes['done']}" + (f" ({again})" if again else "")
        + f", already done {counts['done'] - len(retrain) + outcomes['skipped']}, "
        f"being trained elsewhere {outcomes['locked']}, failed {outcomes['failed']}"
        + (f", interrupted {outcomes['interrupted']} (the same command resumes them)" if outcomes["interrupted"] else "")
        + (f", submitted {outcomes['submitted']}" if outcomes["submitted"] else "")
        + f" ({time.perf_counter() - began:.0f} s)"
    )
    reporter.close()
    for report in reports:
        if report.outcome == "failed":
            reporter.message(f"failed {report.run_id} {report.path}: {report.error}")
    if show_table and not outcomes["submitted"]:
        import sys

        from nlbench.report.render import render
        from nlbench.report.tables import build_table

        render(build_table(folder, run_ids={run.spec.run_id for run in grid},
                           warn=lambda note: print(note, file=sys.stderr)), "rich")
    if outcomes["failed"]:
        raise RunFailed(f"{outcomes['failed']} run(s) of the sweep failed (listed above); "
                        f"`nlbench status --runs-dir {folder} --failed` shows them, and the same command again retries them.")


def _print_grid(console, grid) -> None:
    from rich.table import Table

    from nlbench.sweep.grid import describe

    table = Table(title=f"{len(grid)} runs", title_justify="left")
    for column in ("method", "dataset", "noise", "seed", "run id", "state", "folder"):
        table.add_column(column, overflow="fold")
    for run in grid:
        row = describe(run.spec)
        state = run.state.state + (f" ({run.state.detail})" if run.state.detail else "")
        table.add_row(row["method"], row["dataset"], row["noise"], str(row["seed"]), row["run_id"], state,
                      str(run.run_dir.path))
    console.print(table)


def _stale_runs(grid: list) -> dict[str, list[str]]:
    """The done runs of a grid trained with other plugin code than installed now: run id -> files."""
    from nlbench.code_identity import code_changes
    from nlbench.fileio import read_json_or_none
    from nlbench.store import RESULT

    out = {}
    for run in grid:
        if run.state.state == "done":
            result = read_json_or_none(run.run_dir.path / RESULT)
            changes = code_changes(result) if isinstance(result, dict) else []
            if changes:
                out[run.spec.run_id] = changes
    return out
