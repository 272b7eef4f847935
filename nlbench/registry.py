"""The registry: what the plugins registered (methods, datasets, executors, loggers) and where each came from.

Built by :func:`nlbench.plugins.build_registry`; everything downstream (spec resolution, the
engine, the CLI) only reads it, so it lives apart from the loader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nlbench.errors import PluginError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import pluggy

    from nlbench.dataset import Dataset
    from nlbench.method import Method


@dataclass
class PluginInfo:
    """One plugin as ``nlbench plugins`` shows it."""

    name: str
    kind: str  # "built-in", "folder" or "entry point"
    origin: str  # a file path or a distribution name
    version: str
    error: str | None = None
    registered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the plugin loaded and registered without error."""
        return self.error is None


@dataclass
class Entry:
    """A registered method or dataset class and the plugin that registered it."""

    name: str
    cls: type
    plugin: PluginInfo


#: The plugin-manager name of an enabled logger: this prefix and the logger's name.
LOGGER_PLUGIN = "logger:"


@dataclass
class Registry:
    """Everything the plugins registered, plus the plugins that failed."""

    methods: dict[str, Entry] = field(default_factory=dict)
    datasets: dict[str, Entry] = field(default_factory=dict)
    executors: dict[str, Entry] = field(default_factory=dict)
    loggers: dict[str, Entry] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    conflicts: dict[tuple[str, str], list[PluginInfo]] = field(default_factory=dict)
    manager: pluggy.PluginManager | None = None

    def method(self, name: str) -> type[Method]:
        """The method class registered as ``name``, or a UsageError listing the known ones."""
        return self._lookup("method", self.methods, name)

    def dataset(self, name: str, instances: dict[str, str] | None = None) -> type[Dataset]:
        """The dataset class registered as ``name``, or a UsageError listing the known ones.

        ``instances`` (configured dataset name -> its plugin) are listed among the known datasets
        of that error; resolving a configured name to its plugin is
        :meth:`nlbench.spec.config.Config.dataset_class`'s job.
        """
        return self._lookup("dataset", self.datasets, name, instances)

    def executor(self, name: str) -> type:
        """The sweep executor registered as ``name``, or a UsageError listing the known ones."""
        return self._lookup("executor", self.executors, name)

    def logger(self, name: str) -> type:
        """The run logger registered as ``name``, or a UsageError listing the known ones."""
        return self._lookup("logger", self.loggers, name)

    def make_loggers(self, names: Iterable[str]) -> dict[str, Any]:
        """One instance of each named logger (name -> instance), in order, duplicates dropped.

        An unknown name, or a logger whose package is missing, is a UsageError raised before any
        logger exists, so a command checks its ``--logger`` flags before it trains anything.
        """
        return {name: self.logger(name)() for name in dict.fromkeys(names)}

    def enable_loggers(self, names: Iterable[str]) -> None:
        """Make exactly the named loggers observe the runs this process trains from now on.

        Fresh instances replace the loggers enabled before (each registered into the plugin
        manager as the plugin ``logger:NAME``), so ``enable_loggers([])`` leaves none behind. An
        unknown name or a missing package raises before anything changes.
        """
        wanted = self.make_loggers(names)
        if self.manager is None:
            if wanted:
                raise UsageError(f"cannot enable logger(s) {', '.join(wanted)}: this registry has no plugin manager.")
            return
        for plugin_name, _ in self.manager.list_name_plugin():
            if plugin_name and plugin_name.startswith(LOGGER_PLUGIN):
                self.manager.unregister(name=plugin_name)
        for name, instance in wanted.items():
            self.manager.register(instance, name=LOGGER_PLUGIN + name)

    def _lookup(self, kind: str, table: dict[str, Entry], name: str, instances: dict[str, str] | None = None) -> Any:
        if (kind, name) in self.conflicts:
            sources = " and ".join(f"{p.name} ({p.origin})" for p in self.conflicts[(kind, name)])
            raise PluginError(f"{kind} {name!r} is registered by two plugins: {sources}. Remove or rename one of them.")
        if name not in table:
            names = sorted([*table, *(f"{n} ({p})" for n, p in (instances or {}).items() if n not in table)])
            known = ", ".join(names) or "(none)"
            hint = ""
            failed = [p for p in self.plugins if not p.ok]
            if failed:
                hint = f" Some plugins failed to load ({', '.join(p.name for p in failed)}): see `nlbench plugins`."
            raise UsageError(f"unknown {kind} {name!r}. Known {kind}s: {known}.{hint}")
        return table[name].cls
