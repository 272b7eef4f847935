"""Pieces shared by the CLI commands: loading the config and the plugin registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.config import Config
    from nlbench.plugins import Registry


def load(config_path: str | None, sets: list[str] | None = None) -> tuple[Config, Registry]:
    """Read benchmark.toml (plus --set) and load every plugin."""
    from nlbench.config import find_config, load_config
    from nlbench.plugins import get_registry

    config = load_config(find_config(config_path), sets)
    return config, get_registry(config.plugin_paths)


def runs_dir(option: str | None, config: Config) -> Path:
    """The runs folder: --runs-dir, else [run] runs_dir (relative to the working directory)."""
    return Path(option or config.run_defaults().runs_dir).expanduser()
