"""``nlbench prepare``: check a dataset's files, build its decode-once cache and list every problem."""

from __future__ import annotations

from typing import Optional

import typer

from nlbench.cli.common import ConfigOption


def prepare(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Dataset to check: a plugin or a configured instance (see `nlbench datasets`)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Folder holding the dataset's files."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a setting, e.g. datasets.ferplus.options.layout=folders (repeatable)."
    ),
    config: ConfigOption = None,
    cache_dir: Optional[str] = typer.Option(
        None, "--cache-dir", help="Decoded-image cache (default: ~/.cache/nlbench)."
    ),
    show: int = typer.Option(20, "--show", help="Problems shown per kind and split (0 = all)."),
) -> None:
    """Check a dataset's layout, build its image cache, and list counts and problems."""
    from nlbench.cli.common import load
    from nlbench.data.prepare import prepare_dataset

    cfg, registry = load(config, set_)
    prepare_dataset(cfg.dataset_class(dataset, registry), dataset, data_root, cfg.dataset_options(dataset),
                    cache_dir or cfg.run_defaults().cache_dir, show)
