"""``nlbench methods | datasets | plugins``: what is registered, by which plugin, what failed."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from nlbench.cli.common import load
from nlbench.progress import stdout_console


def _source(entry) -> str:
    plugin = entry.plugin
    version = f" {plugin.version}" if plugin.version else ""
    if plugin.kind == "entry point":  # the distribution is what users install and upgrade
        return f"{plugin.origin}{version} (entry point {plugin.name})"
    return f"{plugin.name}{version} ({plugin.kind})"


def methods(config: Optional[str] = typer.Option(None, "--config", help="benchmark.toml to read.")) -> None:
    """List the registered training methods."""
    _, registry = load(config)
    table = Table(title="methods")
    for column in ("name", "summary", "paper", "plugin"):
        table.add_column(column, overflow="fold")
    for name, entry in sorted(registry.methods.items()):
        table.add_row(name, entry.cls.summary, entry.cls.paper, _source(entry))
    stdout_console().print(table)
    _warn_failures(registry)


def datasets(config: Optional[str] = typer.Option(None, "--config", help="benchmark.toml to read.")) -> None:
    """List the registered datasets."""
    _, registry = load(config)
    table = Table(title="datasets")
    for column in ("name", "classes", "needs files", "summary", "plugin"):
        table.add_column(column, overflow="fold")
    for name, entry in sorted(registry.datasets.items()):
        cls = entry.cls
        classes = str(len(cls.class_names)) if cls.class_names else "per data root"
        table.add_row(name, classes, "yes" if cls.needs_root else "no", cls.summary, _source(entry))
    stdout_console().print(table)
    _warn_failures(registry)


def plugins(config: Optional[str] = typer.Option(None, "--config", help="benchmark.toml to read.")) -> None:
    """List every plugin found, what it registered, and why any failed to load."""
    _, registry = load(config)
    table = Table(title="plugins")
    for column in ("plugin", "kind", "version", "registered", "status", "origin"):
        table.add_column(column, overflow="fold")
    for info in registry.plugins:
        status = "ok" if info.ok else "FAILED (below)"
        table.add_row(info.name, info.kind, info.version, ", ".join(info.registered), status, info.origin)
    console = stdout_console()
    console.print(table)
    for info in registry.plugins:
        if not info.ok:  # in full, unwrapped: people copy these lines into bug reports
            console.print(f"FAILED {info.name} ({info.origin}): {info.error}", markup=False, soft_wrap=True)


def _warn_failures(registry) -> None:
    failed = [p for p in registry.plugins if not p.ok]
    if failed:
        Console(stderr=True).print(
            f"{len(failed)} plugin(s) failed to load: {', '.join(p.name for p in failed)} (see `nlbench plugins`)",
            markup=False,
        )
