"""Pieces shared by the CLI commands: loading the config and the plugin registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.registry import Registry
    from nlbench.spec.config import Config


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


def runs_dir(option: str | None, config: Config) -> Path:
    """The runs folder: --runs-dir, else [run] runs_dir (relative to the working directory)."""
    from nlbench.errors import UsageError

    folder = Path(option or config.run_defaults().runs_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"the runs folder {folder} is a file, not a folder; choose another --runs-dir "
                         f"(or [run] runs_dir in benchmark.toml).")
    return folder
