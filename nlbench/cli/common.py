"""Pieces shared by the CLI commands: their common options, list parsing, loading the config and plugins."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.registry import Registry
    from nlbench.spec.config import Config

# -- options every command declares alike (``config: ConfigOption = None``) --------------------------
ConfigOption = Annotated[Optional[str], typer.Option(
    "--config", help="benchmark.toml to read (default: ./benchmark.toml).")]
RunsDirOption = Annotated[Optional[str], typer.Option("--runs-dir", help="Where runs are stored (default: ./runs).")]
# The run filters of plot and report (comma-separated lists; empty: all).
MethodsFilter = Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods (default: all).")]
DatasetsFilter = Annotated[Optional[str], typer.Option("--datasets", help="Comma-separated datasets (default: all).")]
NoiseFilter = Annotated[Optional[str], typer.Option("--noise", help="Comma-separated noise rates (default: all).")]
SeedsFilter = Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds (default: all).")]
RunFilter = Annotated[Optional[str], typer.Option("--run", help="Comma-separated run ids (or their first characters).")]
WhereFilter = Annotated[Optional[list[str]], typer.Option(
    "--where", help="KEY=VALUE on a resolved setting, e.g. train.train_size=800 or methods.gce.q=0.7 (repeatable).")]


OverwriteOption = Annotated[bool, typer.Option(
    "--overwrite", help="Replace an existing output file that nlbench did not write.")]


def output_file(text: str, ours: Any, overwrite: bool = False, flag: str = "--out") -> Path:
    """The path of a file a command writes, refused when it would lose something.

    Refused: an empty path, a folder, a path under a folder that does not exist (nothing is
    created), and an existing file that nlbench did not write (``ours(path)`` says whether it
    did), unless ``overwrite``.
    """
    from nlbench.errors import UsageError

    if not text or not text.strip():
        raise UsageError(f"{flag} is empty; give the path of the file to write.")
    path = Path(text).expanduser()
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give the path of a file in it.")
    if not path.parent.is_dir():
        raise UsageError(f"the folder of {flag} {path} does not exist; create it first (nlbench creates no folders "
                         f"for output files).")
    if path.exists() and not overwrite and not ours(path):
        raise UsageError(f"{path} exists and was not written by this nlbench command; pass --overwrite to replace "
                         f"it, or choose another {flag}.")
    return path


def starts_with(*prefixes: bytes) -> Any:
    """A test for :func:`output_file`: the file's first bytes are one of ``prefixes`` (an nlbench header)."""

    def check(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                head = handle.read(max(len(p) for p in prefixes))
        except OSError:
            return False
        return any(head.startswith(p) for p in prefixes)

    return check


def split_items(text: Optional[str]) -> list[str]:
    """The items of a comma-separated option (blanks dropped); [] for None."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else []


def parse_numbers(text: Optional[str], kind: type, flag: str) -> list:
    """The numbers of a comma-separated option, or a usage error naming ``flag``."""
    from nlbench.errors import UsageError

    try:
        return [kind(part) for part in split_items(text)]
    except ValueError:
        raise UsageError(f"{flag} takes a comma-separated list of numbers, got {text!r}.") from None


def make_filters(methods: Optional[str], datasets: Optional[str], noise: Optional[str], seeds: Optional[str],
                 run: Optional[str], where: Optional[list[str]] = None) -> Any:
    """A :class:`nlbench.report.runs.Filters` from the filter options."""
    from nlbench.report.runs import Filters

    return Filters(methods=split_items(methods), datasets=split_items(datasets),
                   noise=parse_numbers(noise, float, "--noise"), seeds=parse_numbers(seeds, int, "--seeds"),
                   run_ids=split_items(run), where=[parse_where(item) for item in where or []])


def parse_where(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--where``; the value is read as TOML (numbers, booleans), else as text."""
    from nlbench.errors import ConfigError, UsageError
    from nlbench.spec.config import parse_set

    if "=" not in item or not item.split("=", 1)[0].strip() or not item.split("=", 1)[1].strip():
        raise UsageError(f"--where expects KEY=VALUE, e.g. train.train_size=800, got {item!r}.")
    try:
        return parse_set(item)
    except ConfigError as err:
        raise UsageError(str(err).replace("--set", "--where")) from None


def load(config_path: str | None, sets: list[str] | None = None,
         report: bool = False) -> tuple[Config, Registry]:
    """Read benchmark.toml (plus --set) and load every plugin (``report``: warn of failed ones)."""
    from nlbench.plugins import get_registry
    from nlbench.spec.config import find_config, load_config

    config = load_config(find_config(config_path), sets)
    registry = get_registry(config.plugin_paths)
    if report:
        report_plugin_failures(registry)
    return config, registry


_REPORTED: set[str] = set()


def report_plugin_failures(registry: Registry) -> None:
    """Say on stderr, once per process, which plugins (or plugin folders) failed to load.

    The commands still run with the plugins that loaded; ``nlbench plugins`` lists them all.
    """
    import sys

    for plugin in registry.plugins:
        if plugin.ok or plugin.name in _REPORTED:
            continue
        _REPORTED.add(plugin.name)
        first = (plugin.error or "").strip().splitlines()
        print(f"warning: plugin {plugin.name} ({plugin.origin or plugin.kind}) failed to load: "
              f"{first[-1] if first else 'unknown error'}; `nlbench plugins` shows the details.", file=sys.stderr)


def runs_dir(option: str | None, config: Config, must_exist: bool = False) -> Path:
    """The runs folder: --runs-dir (relative to the working directory), else [run] runs_dir (a path in
    benchmark.toml is relative to the file's folder: :func:`nlbench.spec.config.load_config` made it
    absolute; ./runs without one).

    ``must_exist``: the command only reads the store, so a missing folder is a typo, not an empty store.
    """
    from nlbench.errors import UsageError

    if option is not None and not option.strip():
        raise UsageError("--runs-dir is empty; give a folder, or leave the flag out for ./runs ([run] runs_dir).")
    folder = Path(option or config.run_defaults().runs_dir).expanduser()
    if folder.is_symlink() and not folder.exists():  # a dangling link, or a link loop
        raise UsageError(f"the runs folder {folder} is a symbolic link to nowhere (or a link loop); fix the link or "
                         f"choose another --runs-dir.")
    if must_exist and not folder.exists():
        raise UsageError(f"the runs folder {folder} does not exist; check --runs-dir (or [run] runs_dir in "
                         f"benchmark.toml). Runs are stored there by `nlbench run` and `nlbench sweep`.")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"the runs folder {folder} is a file, not a folder; choose another --runs-dir "
                         f"(or [run] runs_dir in benchmark.toml).")
    return folder


def transition_blocks(noise: dict[str, Any], class_names: tuple[str, ...]) -> list[Any]:
    """The realised noise of a run and its transition matrix (counts; rows: true class, columns: label trained on)."""
    from rich.table import Table

    counts = noise.get("transitions") or []
    source = noise.get("source", "injected")
    how = {"injected": f"{noise.get('mode')} noise at rate {noise.get('rate', 0):.2f}",
           "dataset": "the dataset's own noisy labels", "file": "the labels of a noise file"}.get(source, source)
    trained = noise.get("trained")
    if trained:  # nlbench 0.5 on: the samples trained on
        lines = [f"label noise: {how}",
                 f"  {100 * trained['rate']:.1f}% of the {trained['samples']:,} labels trained on are wrong "
                 f"({trained['wrong']:,});",
                 f"  {100 * float(noise.get('realised_rate') or 0):.1f}% of the whole training split "
                 f"(before the hold-out and train_size)"]
    else:
        lines = [f"label noise: {how}; {100 * float(noise.get('realised_rate') or 0):.1f}% of the training labels wrong"]
    if noise.get("note"):
        lines.append(f"  {noise['note']}")
    if noise.get("file"):
        lines.append(f"  noise file {noise['file'].get('path')} (sha256 {noise['file'].get('sha256')})")
    from rich import box

    whose = "the samples trained on" if trained else "every training sample"
    matrix = Table(title=f"Noise transitions ({whose}; counts; rows: true class, columns: label trained on)",
                   box=box.SIMPLE_HEAD, padding=(0, 1))
    matrix.add_column("true")
    for name in class_names:
        matrix.add_column(name[:4], justify="right")
    matrix.add_column("noisy%", justify="right")
    for name, row in zip(class_names, counts):
        total = sum(row)
        own = row[class_names.index(name)]
        matrix.add_row(name, *[str(v) for v in row], f"{100 * (total - own) / total:.1f}" if total else "–")
    # Per label trained on: how many of the samples carrying it are wrong. On an imbalanced set
    # a small class can be mostly wrong labels at a modest overall rate.
    columns = [sum(column) for column in zip(*counts)] if counts else []
    wrong = [f"{100 * (total - counts[j][j]) / total:.1f}" if total else "–" for j, total in enumerate(columns)]
    if wrong:
        matrix.add_section()
        matrix.add_row("wrong%", *wrong, "")
    lines.append("  wrong% (bottom row): of the samples labelled with a class, the share\n"
                 "  whose true class is another")
    return ["\n".join(lines), matrix]
