"""``nlbench methods | datasets | plugins``: what is registered, by which plugin, what failed.

``nlbench methods NAME`` and ``nlbench datasets NAME`` list every option of one plugin with its
default, its type or choices and the one-line doc from its source (:mod:`nlbench.options`);
``nlbench methods NAME`` also shows what ``nlbench tune`` searches (:mod:`nlbench.tune.space`).
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from nlbench.cli.common import ConfigOption


def _source(entry: Any, short: bool = False) -> str:
    """Which plugin registered ``entry`` (``short``: "built-in" for nlbench's own, for narrow lists)."""
    plugin = entry.plugin
    version = f" {plugin.version}" if plugin.version else ""
    if short and plugin.kind == "built-in":
        return "built-in"
    if plugin.kind == "entry point":  # the distribution is what users install and upgrade
        return f"{plugin.origin}{version} (entry point {plugin.name})"
    return f"{plugin.name}{version} ({plugin.kind})"


def methods(
    name: Optional[str] = typer.Argument(None, help="A method to describe with all its options."),
    config: ConfigOption = None,
) -> None:
    """List the registered training methods, or every option of one."""
    from rich.table import Table

    from nlbench.cli.common import load
    from nlbench.progress import keep_words_whole, stdout_console

    cfg, registry = load(config)
    if name is not None:
        from nlbench.tune.space import check_overrides, search_space

        cls = registry.method(name)
        check_overrides(cfg, registry)  # every [tune] table, not only this method's: a typo fails here
        space = search_space(cls, cfg)  # before printing anything: a bad space is an error, not half a listing
        _describe_options(f"method {name}", cls, registry.methods[name], cls.HParams,
                          f"methods.{name}", extra=_method_facts(cls))
        _describe_space(cls, space, cfg.source)
        return
    table = Table(title="methods")
    for column in ("name", "summary", "paper", "plugin"):
        table.add_column(column, overflow="fold")
    for key, entry in sorted(registry.methods.items()):
        table.add_row(key, entry.cls.summary, entry.cls.paper, _source(entry, short=True))
    console = stdout_console()
    console.print(keep_words_whole(table, console.width))
    _warn_failures(registry)


def datasets(
    name: Optional[str] = typer.Argument(None, help="A dataset (plugin or configured instance) to describe with all "
                                                    "its options."),
    config: ConfigOption = None,
) -> None:
    """List the registered dataset plugins and the instances configured in benchmark.toml, or every option of one."""
    from rich.table import Table

    from nlbench.cli.common import load
    from nlbench.progress import keep_words_whole, stdout_console

    cfg, registry = load(config)
    if name is not None:
        plugin = cfg.dataset_plugin(name, registry)
        cls = registry.dataset(plugin)
        facts = ([f"an instance of the dataset plugin {plugin} ([datasets.{name}] in "
                  f"{cfg.source or 'benchmark.toml'})"] if plugin != name else []) + _dataset_facts(cls)
        _describe_options(f"dataset {name}", cls, registry.datasets[plugin], cls.Options,
                          f"datasets.{name}.options", extra=facts)
        return
    table = Table(title="datasets")
    for column in ("name", "classes", "needs files", "summary", "plugin"):
        table.add_column(column, overflow="fold")
    for key, entry in sorted(registry.datasets.items()):
        cls = entry.cls
        classes = str(len(cls.class_names)) if cls.class_names else "per data root"
        table.add_row(key, classes, "yes" if cls.needs_root else "no", cls.summary, _source(entry, short=True))
    console = stdout_console()
    console.print(keep_words_whole(table, console.width))
    instances = cfg.dataset_instances()
    if instances:
        from rich.markup import escape

        mine = Table(title=escape("dataset instances (benchmark.toml: [datasets.NAME] with a plugin key)"))
        for column in ("name", "instance of", "options"):
            mine.add_column(column, overflow="fold")
        for key in sorted(instances):
            plugin = cfg.dataset_plugin(key, registry)  # checked: a wrong plugin is an error naming the key
            options = ", ".join(f"{k}={v!r}" for k, v in cfg.dataset_options(key).items()) or "(plugin defaults)"
            mine.add_row(escape(key), plugin, escape(options))
        console.print(mine)
    _warn_failures(registry)


def plugins(config: ConfigOption = None) -> None:
    """List every plugin found, what it registered, and why any failed to load."""
    from rich.table import Table

    from nlbench.cli.common import load
    from nlbench.progress import stdout_console

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


def _method_facts(cls: Any) -> list[str]:
    facts = [cls.summary, cls.paper]
    if cls.uses_noise_rate:
        facts.append("uses the nominal noise rate (its forget rate defaults to it)")
    return [f for f in facts if f]


def _dataset_facts(cls: Any) -> list[str]:
    facts = [cls.summary, cls.paper]
    if cls.class_names:
        facts.append("classes: " + ", ".join(cls.class_names))
    facts.append("needs --data-root" if cls.needs_root else "needs no files")
    if cls.train_defaults:
        facts.append("training defaults: " + ", ".join(f"{k}={v}" for k, v in cls.train_defaults.items()))
    return [f for f in facts if f]


def _describe_options(title: str, cls: Any, entry: Any, options_cls: type, prefix: str, extra: list[str]) -> None:
    """Print one plugin's facts and its options table."""
    from rich.markup import escape

    from nlbench.options import option_infos
    from nlbench.progress import stdout_console

    console = stdout_console()
    console.print(f"{title} ({_source(entry)})", markup=False, highlight=False)
    for fact in extra:
        console.print(f"  {fact}", markup=False, highlight=False)
    if not option_infos(options_cls):
        console.print("  no options", markup=False)
        return
    console.print(options_table(options_cls, escape(f"options (--set {prefix}.NAME=VALUE or [{prefix}] in "
                                                    f"benchmark.toml)")))


def _describe_space(cls: Any, space: dict[str, Any], source: Any) -> None:
    """Print what ``nlbench tune`` searches for method ``cls`` (:func:`nlbench.tune.space.search_space`):
    its own options, then the shared knobs."""
    from rich.markup import escape
    from rich.table import Table

    from nlbench.progress import keep_words_whole, stdout_console
    from nlbench.tune.space import SHARED, SPACES, format_value

    title = (f"tuned by `nlbench tune` (override: [tune.{SPACES}.{cls.name}] and [tune.{SHARED}] in "
             f"benchmark.toml)")
    table = Table(title=escape(title), title_justify="left")
    for column in ("option", "default", "space", "scale"):
        table.add_column(column, overflow="fold")
    own = [dim for dim in space.values() if dim.key.startswith("methods.")]
    shared = [dim for dim in space.values() if not dim.key.startswith("methods.")]
    for dims in (own, shared):
        if dims is shared and own:
            table.add_section()
        for dim in dims:
            name = dim.name if dims is own else dim.key  # the method's own by name, the shared by --set key
            mark = " *" if dim.source == "benchmark.toml" else ""
            table.add_row(f"{name}{mark}", format_value(dim.default), dim.describe(), dim.scale)
    console = stdout_console()
    console.print(keep_words_whole(table, console.width))
    notes = [] if own else [f"{cls.name} tunes no options of its own."]
    notes.append("train.* are the shared knobs: every method is tuned over them alike.")
    if any(dim.source == "benchmark.toml" for dim in space.values()):
        notes.append(f"* set in {source or 'benchmark.toml'}.")
    outside = [dim.name for dim in space.values() if not dim.contains(dim.default)]
    if outside:
        notes.append(f"The default of {', '.join(outside)} lies outside the space benchmark.toml sets.")
    for note in notes:
        console.print(note, markup=False, highlight=False)


def options_table(options_cls: type, title: str, configured: dict[str, Any] | None = None) -> Any:
    """A table of an options dataclass: name, default, type or choices, doc (and the configured
    value where ``configured`` sets one)."""
    from rich.table import Table

    from nlbench.options import option_infos

    table = Table(title=title, title_justify="left")
    columns = ("option", "default", *(("configured",) if configured else ()), "type", "description")
    for column in columns:
        table.add_column(column, overflow="fold")

    def text(value: Any) -> str:
        return repr(value) if isinstance(value, str) else str(value)

    for info in option_infos(options_cls):
        shown = [text(configured[info.name]) if info.name in configured else ""] if configured else []
        table.add_row(info.name, text(info.default), *shown, info.describe_type(), info.doc)
    return table


def settings(config: ConfigOption = None) -> None:
    """List every training setting ([train], --set train.NAME=VALUE) and run default ([run])."""
    from rich.markup import escape

    from nlbench.progress import stdout_console
    from nlbench.settings import RunDefaults, TrainSettings
    from nlbench.spec.config import find_config, load_config

    cfg = load_config(find_config(config))
    console = stdout_console()
    where = f" ({cfg.source})" if cfg.source else ""
    console.print(options_table(TrainSettings, escape("training settings: [train] in benchmark.toml, "
                                                      "[datasets.NAME] per dataset, --set train.NAME=VALUE"),
                                cfg.train or None))
    console.print(options_table(RunDefaults, escape("run defaults: [run] in benchmark.toml; flags override them"),
                                cfg.run or None))
    if cfg.train or cfg.run:
        console.print(f"configured: the value benchmark.toml{where} sets. A dataset's own defaults "
                      f"(`nlbench datasets NAME`) come between [train] and [datasets.NAME].", markup=False)


def _warn_failures(registry: Any) -> None:
    from rich.console import Console

    failed = [p for p in registry.plugins if not p.ok]
    if failed:
        Console(stderr=True, emoji=False).print(
            f"{len(failed)} plugin(s) failed to load: {', '.join(p.name for p in failed)} (see `nlbench plugins`)",
            markup=False,
        )
