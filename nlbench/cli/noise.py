"""``nlbench noise preview|export``: a run's noisy training labels without training, shown or written to a file."""

from __future__ import annotations

import types
from typing import Annotated, Any, Optional

import typer

from nlbench.cli.common import ConfigOption, OverwriteOption

app = typer.Typer(help="Preview or export the noisy training labels of a dataset, noise rate, mode and seed.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)


def _draw(dataset: Optional[str], noise: Optional[float], noise_mode: Optional[str], noise_source: Optional[str],
          seed: Optional[int], data_root: Optional[str], set_: Optional[list[str]], config: Optional[str],
          cache_dir: Optional[str], noise_file: Optional[str] = None, noise_file_base: Optional[int] = None):
    """The spec (of a Standard run: the method never changes the labels), the dataset and the noise draw."""
    from nlbench.cli.common import load
    from nlbench.spec.resolve import RunRequest, resolve_spec
    from nlbench.train.assemble import load_splits, make_dataset, training_labels

    cfg, registry = load(config)
    request = RunRequest(method="standard", dataset=dataset, noise=noise, noise_mode=noise_mode,
                         noise_source=noise_source, seed=seed, data_root=data_root, cache_dir=cache_dir,
                         noise_file=noise_file, noise_file_base=noise_file_base, sets=list(set_ or []))
    spec = resolve_spec(request, cfg, registry)
    data = make_dataset(registry, spec)
    if spec.noise.source == "injected" and spec.noise.mode == "instance":
        train = load_splits(data, spec)[0]  # instance noise depends on the images
    else:
        train = types.SimpleNamespace(table=data.table("train"), images=None)
    return spec, data, train.table, training_labels(data, train, spec)


# The options of a noise draw, shared by preview and export.
DatasetOption = Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset (default: [run] of benchmark.toml).")]
NoiseOption = Annotated[Optional[float], typer.Option("--noise", "-n", help="Label-noise rate in [0, 1).")]
ModeOption = Annotated[Optional[str], typer.Option(
    "--noise-mode", help="flip, exact, uniform, pair, fer-confusion or instance.")]
SourceOption = Annotated[Optional[str], typer.Option(
    "--noise-source", help="injected (default) or dataset (its own noisy labels).")]
SeedOption = Annotated[Optional[int], typer.Option("--seed", "-s", help="Run seed (picks the noisy labels).")]
DataRootOption = Annotated[Optional[str], typer.Option("--data-root", help="Folder holding the dataset's files.")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a setting, e.g. datasets.ferplus.options.real_noise=vote.")]
CacheOption = Annotated[Optional[str], typer.Option(
    "--cache-dir", help="Decoded-image cache (instance noise reads the images).")]


@app.command("preview", short_help="Print the realised noise rate and transition matrix.")
def preview(
    dataset: DatasetOption = None, noise: NoiseOption = None, noise_mode: ModeOption = None,
    noise_source: SourceOption = None, seed: SeedOption = None, data_root: DataRootOption = None,
    set_: SetOption = None, config: ConfigOption = None, cache_dir: CacheOption = None,
    noise_file: Optional[str] = typer.Option(None, "--noise-file", help="Preview the labels of a noise file instead."),
    noise_file_base: Optional[int] = typer.Option(None, "--noise-file-base", help="First class number of a list file."),
) -> None:
    """Print the realised noise rate and the transition matrix (counts) of a noise draw, without training."""
    from nlbench.cli.common import transition_blocks
    from nlbench.progress import stdout_console

    spec, data, table, result = _draw(dataset, noise, noise_mode, noise_source, seed, data_root, set_, config,
                                      cache_dir, noise_file, noise_file_base)
    from nlbench.data.noise import trained_noise
    from nlbench.train.assemble import trained_indices

    trained = trained_noise(table.labels, result.labels, trained_indices(result.labels, spec)[0], tuple(data.class_names))
    record = {"rate": spec.noise.rate, "mode": spec.noise.mode, "source": spec.noise.source,
              "realised_rate": result.realised_rate, "note": result.note,
              "transitions": trained.pop("transitions"), "trained": trained}
    out = stdout_console()
    out.print(f"{spec.data.name}, seed {spec.seed}: {len(table):,} training samples, {trained['samples']:,} "
              f"trained on\n  (after the validation hold-out of {spec.train.val_fraction:g} and train_size "
              f"{spec.train.train_size or '0 (all)'})", markup=False)
    for block in transition_blocks(record, tuple(data.class_names)):
        out.print(block)


@app.command("export", short_help="Write the noisy labels in the noise-file format.")
def export(
    out: str = typer.Option(..., "--out", "-o", help="File to write (nlbench's noise-file format)."),
    dataset: DatasetOption = None, noise: NoiseOption = None, noise_mode: ModeOption = None,
    noise_source: SourceOption = None, seed: SeedOption = None, data_root: DataRootOption = None,
    set_: SetOption = None, config: ConfigOption = None, cache_dir: CacheOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Write the noisy training labels by sample name, with a sha256 and the settings that made them."""
    import nlbench
    from nlbench.cli.common import output_file, starts_with
    from nlbench.data.noise_file import MAGIC, sample_names, samples_sha256, write_noise_file
    from nlbench.progress import stdout_console

    path = output_file(out, starts_with(MAGIC.encode()), overwrite)  # before the draw: fail fast

    spec, data, table, result = _draw(dataset, noise, noise_mode, noise_source, seed, data_root, set_, config,
                                      cache_dir)
    settings: dict[str, Any] = {
        "dataset": spec.data.name, "dataset_options": dict(spec.data.options), "dataset_version": spec.data.version,
        "data_fingerprint": spec.data.fingerprint, "rate": spec.noise.rate, "mode": spec.noise.mode,
        "source": spec.noise.source, "seed": spec.seed, "realised_rate": round(result.realised_rate, 6),
        "nlbench": nlbench.__version__, "samples_sha256": samples_sha256(table, data.root),
    }
    sha = write_noise_file(path, sample_names(table.refs, data.root), result.labels, tuple(data.class_names), settings)
    console = stdout_console()
    console.print(f"wrote {len(table):,} labels of {spec.data.name} ({100 * result.realised_rate:.1f}% noisy) to {path}",
                  markup=False, soft_wrap=True)
    console.print(f"sha256 {sha}; train on them with --noise-file {path}", markup=False, soft_wrap=True)
