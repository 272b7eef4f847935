"""``nlbench run``: train one method on one dataset at one noise level, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from nlbench.cli.common import ConfigOption, RunsDirOption

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


def run(
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Method to train (see `nlbench methods`); default cct."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset (see `nlbench datasets`); default synthfer."),
    noise: Optional[float] = typer.Option(None, "--noise", "-n", help="Label-noise rate in [0, 1); default 0.2."),
    noise_mode: Optional[str] = typer.Option(
        None, "--noise-mode", help="flip (default), exact, uniform, pair, fer-confusion or instance."),
    noise_source: Optional[str] = typer.Option(
        None, "--noise-source", help="injected (default) or dataset (train on the dataset's own noisy labels)."
    ),
    noise_file: Optional[str] = typer.Option(
        None, "--noise-file", help="Train on the labels of a noise file (`nlbench noise export`, or 'name label' lines)."),
    noise_file_base: Optional[int] = typer.Option(
        None, "--noise-file-base", help="First class number in a 'name label' list (default: the dataset's, 1 for RAF-DB)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Run seed (also picks the noisy labels)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Training epochs (default: per dataset)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default: CUDA if present), cpu or cuda."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Folder holding the dataset's files."),
    pretrained: Optional[str] = typer.Option(
        None, "--pretrained", help="ResNet-18 checkpoint file (MS-Celeb-1M in the SCN/CCT format, or torchvision/timm keys)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a setting, e.g. methods.cct.lambda_max=0.8 or train.batch_size=128 (repeatable)."
    ),
    config: ConfigOption = None,
    runs: RunsDirOption = None,
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Decoded-image cache (default: ~/.cache/nlbench)."),
    force: bool = typer.Option(False, "--force", help="Train again even if an identical run is done."),
    keep_checkpoint: bool = typer.Option(
        False, "--keep-checkpoint", help="Keep the resumable checkpoint of a finished run (default: model.pt only)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output on stderr."),
    logger: list[str] = typer.Option(
        [], "--logger", help="Follow the run's curves with a logger: tensorboard, or a plugin's (repeatable)."),
) -> None:
    """Train one run; an identical finished run is reported and skipped, an interrupted one resumed."""
    from nlbench.cli.common import load, runs_dir
    from nlbench.progress import make_reporter, stdout_console
    from nlbench.spec.resolve import RunRequest, resolve_spec
    from nlbench.train.engine import Engine

    cfg, registry = load(config, report=True)
    request = RunRequest(
        method=method, dataset=dataset, noise=noise, noise_mode=noise_mode, noise_source=noise_source,
        seed=seed, epochs=epochs, data_root=data_root, pretrained=pretrained, device=device, cache_dir=cache_dir,
        noise_file=noise_file, noise_file_base=noise_file_base, sets=list(set_),
    )
    spec = resolve_spec(request, cfg, registry)
    from nlbench.train.assemble import resolve_device

    target = resolve_device(spec.device)
    registry.enable_loggers(logger)  # observers of this run only: the finally below removes them
    reporter = make_reporter(quiet)
    reporter.message(f"nlbench run: {spec.describe()}, device {target}")
    engine = Engine(spec, registry, runs_dir(runs, cfg), reporter, device=target)
    from nlbench.executors import interrupt_on_sigterm

    interrupt_on_sigterm()  # SLURM sends SIGTERM before it kills: leave the run interrupted, resumable
    try:
        outcome = engine.execute(force=force, keep_checkpoint=keep_checkpoint)
    finally:
        registry.enable_loggers([])
        reporter.close()
    out = stdout_console()
    if outcome.skipped:
        reporter.message(f"an identical run is already done: {outcome.run_dir.path} (use --force to train it again)")
    print_result(out, outcome.result, outcome.run_dir.path)


def print_result(console: Console, result: dict, path: Path) -> None:
    """The result of a run as a table of accuracies on stdout."""
    from rich.table import Table

    noise = result["noise"]
    how = {"dataset": "the dataset's own noisy labels", "file": "noise file"}.get(
        noise.get("source"), f"noise {noise['rate']:.2f} {noise.get('mode', 'flip')}")
    title = (
        f"{result['method']} on {result['dataset']}, {how} "
        + (f"(realised {100 * noise['realised_rate']:.1f}%), " if noise.get("realised_rate") is not None else "")
        + f"seed {result['seed']}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("last", justify="right")
    table.add_column(f"mean last {result['metrics']['model']['k']}", justify="right")
    table.add_column("val-sel. (epoch)", justify="right")
    table.add_column("best* (epoch)", justify="right")
    for name, summary in (result["metrics"].get("members") or {"model": result["metrics"]["model"]}).items():
        val = f"{summary['val']:.2f} ({summary['val_epoch']})" if "val" in summary else "–"
        table.add_row(name, f"{summary['last']:.2f}", f"{summary['lastk']:.2f}", val,
                      f"{summary['best']:.2f} ({summary['best_epoch']})")
    table.caption = "* selected on the test set: an oracle; val-sel. = selected on the noisy validation split"
    console.print(table)
    model = result["metrics"]["model"]
    console.print(
        f"deployable model: last {model['last']:.2f}%, mean of last {model['k']} {model['lastk']:.2f}%, "
        + (f"val-selected {model['val']:.2f}% (epoch {model['val_epoch']}), " if "val" in model else "")
        + f"best {model['best']:.2f}% (epoch {model['best_epoch']}, selected on the test set: an oracle)"
    )
    console.print(f"stored in {path}", soft_wrap=True)
