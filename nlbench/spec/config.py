"""benchmark.toml: reading it, checking its structure, and applying ``--set key=value`` to it.

The file holds ``[run]`` defaults, ``[train]`` (the shared pipeline), ``[methods.<name>]``,
``[datasets.<name>]`` (one dataset: the ``plugin`` it is an instance of, its training settings and
its ``options``), ``[plugins]`` and
``[sweeps.<name>]`` (named grids for ``nlbench sweep --preset``), and ``[tune]`` (overrides of the
search spaces of ``nlbench tune``: :mod:`nlbench.tune.space`). How these combine into the
settings of one run (the precedence) is decided in one
place, :func:`nlbench.spec.resolve_spec`. Every key is checked: an unknown one is an error that
names it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlbench.errors import ConfigError
from nlbench.options import build_options
from nlbench.settings import RunDefaults, TrainSettings

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.dataset import Dataset
    from nlbench.registry import Registry

CONFIG_ENV = "NLBENCH_CONFIG"
CONFIG_NAME = "benchmark.toml"


TOP_LEVEL = {"run", "train", "methods", "datasets", "plugins", "sweeps", "tune"}
#: The tables of ``[tune]``: ``[tune.spaces.<method>]`` and ``[tune.shared]`` (the [train] knobs).
TUNE_TABLES = ("shared", "spaces")


@dataclass
class Config:
    """The merged contents of benchmark.toml and ``--set`` overrides, checked key by key."""

    run: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugin_paths: list[Path] = field(default_factory=list)
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None
    #: ``[tune]``: ``spaces`` (method -> overrides) and ``shared``; their values are checked against
    #: the options by :func:`nlbench.tune.space.check_overrides`.
    tune: dict[str, Any] = field(default_factory=dict)

    def run_defaults(self) -> RunDefaults:
        """The ``[run]`` section on top of the built-in defaults."""
        return build_options(RunDefaults, self.run, "run")

    def dataset_options(self, dataset: str) -> dict[str, Any]:
        """``[datasets.<name>.options]``: options passed to the dataset plugin."""
        return dict(self.datasets.get(dataset, {}).get("options", {}))

    def dataset_instances(self) -> dict[str, Any]:
        """The configured datasets that name a ``plugin`` other than their own name -> that plugin (unchecked)."""
        return {name: table["plugin"] for name, table in self.datasets.items()
                if "plugin" in table and table["plugin"] != name}

    def dataset_plugin(self, name: str, registry: Registry) -> str:
        """The dataset plugin the dataset ``name`` is an instance of, checked against ``registry``.

        A dataset is named by its instance: ``[datasets.<name>]`` with ``plugin = "csvlabels"``
        makes ``name`` an instance of csvlabels, with its own training settings and options. A
        table without ``plugin`` (or no table) names the plugin called ``name`` itself, so the
        built-in names stay instances of themselves. A ``plugin`` that is not a string or names
        no registered dataset, and an instance named after another plugin, are ConfigErrors; an
        unknown name is a UsageError listing the plugins and the configured instances.
        """
        table = self.datasets.get(name, {})
        if "plugin" not in table:
            registry.dataset(name, self.dataset_instances())  # a UsageError unless registered
            return name
        plugin = table["plugin"]
        known = ", ".join(sorted(registry.datasets)) or "(none)"
        if not isinstance(plugin, str):
            raise ConfigError(f"datasets.{name}.plugin must be the name of a dataset plugin (a string), got {plugin!r}; "
                              f"known plugins: {known}.")
        if plugin not in registry.datasets:
            failed = [p.name for p in registry.plugins if not p.ok]
            hint = f" Some plugins failed to load ({', '.join(failed)}): see `nlbench plugins`." if failed else ""
            raise ConfigError(f"datasets.{name}.plugin: no dataset plugin is called {plugin!r}; known plugins: "
                              f"{known}.{hint}")
        if name in registry.datasets and name != plugin:
            raise ConfigError(f"datasets.{name}.plugin = {plugin!r}: {name!r} is the name of another dataset plugin; "
                              f"give the instance a name of its own (known plugins: {known}).")
        registry.dataset(plugin)  # two plugins registering the same name are a PluginError here
        return plugin

    def dataset_class(self, name: str, registry: Registry) -> type[Dataset]:
        """The plugin class of the dataset (instance) ``name``: see :meth:`dataset_plugin`."""
        return registry.dataset(self.dataset_plugin(name, registry))

    def dataset_names(self, registry: Registry) -> list[str]:
        """Every dataset a run can name: the registered plugins and the configured instances."""
        return sorted(set(registry.datasets) | set(self.datasets))

    def method_hparams(self, method: str) -> dict[str, Any]:
        """``[methods.<name>]``: hyperparameters overriding the method's defaults."""
        return dict(self.methods.get(method, {}))

    def dataset_train(self, dataset: str) -> dict[str, Any]:
        """``[datasets.<name>]`` without its plugin and options: training settings of that dataset."""
        return {k: v for k, v in self.datasets.get(dataset, {}).items() if k not in ("options", "plugin")}

    def with_sets(self, items: list[tuple[str, Any]]) -> Config:
        """A copy with parsed ``--set`` items applied (see :func:`parse_set`), checked again."""
        if not items:
            return self
        raw: dict[str, Any] = {
            "run": dict(self.run), "train": dict(self.train),
            "methods": {k: dict(v) for k, v in self.methods.items()},
            "datasets": {k: {**v, **({"options": dict(v["options"])} if isinstance(v.get("options"), dict) else {})}
                         for k, v in self.datasets.items()},
            "sweeps": {k: dict(v) for k, v in self.sweeps.items()},
            "tune": {k: ({m: dict(t) for m, t in v.items()} if k == "spaces" else dict(v)) for k, v in self.tune.items()},
        }
        for key, value in items:
            if key.split(".", 1)[0] == "plugins":
                raise ConfigError(f"--set {key}: plugin folders are set in benchmark.toml, not with --set.")
            set_dotted(raw, key, value)
        checked = _check_structure(raw, None)  # --set items: their messages name the key, not the file
        return replace(self, run=checked["run"], train=checked["train"], methods=checked["methods"],
                       datasets=checked["datasets"], sweeps=checked["sweeps"], tune=checked["tune"])


def find_config(explicit: str | Path | None = None) -> Path | None:
    """The benchmark.toml to read: ``--config``, then $NLBENCH_CONFIG, then ./benchmark.toml."""
    if explicit:
        return _existing_file(Path(explicit).expanduser(), "config file")
    env = os.environ.get(CONFIG_ENV)
    if env:
        return _existing_file(Path(env).expanduser(), f"${CONFIG_ENV}")
    local = Path.cwd() / CONFIG_NAME
    return local if local.is_file() else None


def _existing_file(path: Path, what: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give the path of a benchmark.toml file.")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist.")
    return path


def load_config(path: Path | None, sets: list[str] | None = None) -> Config:
    """Read and check a benchmark.toml (``None``: built-in defaults), then apply ``--set`` overrides.

    ``sets`` are applied as plain assignments to the file's tables; ``nlbench run`` passes its
    ``--set`` items to :func:`nlbench.spec.resolve_spec` instead, which gives ``train.*`` items
    the precedence of command-line flags.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}. Fix the file or pass another with --config.") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8.") from None
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror}.") from None
    checked = _check_structure(raw, path)
    plugins = raw.get("plugins", {})
    base = Path(os.path.abspath(path)).parent if path is not None else Path.cwd()
    _paths_relative_to(checked, base)
    config = Config(
        run=checked["run"], train=checked["train"], methods=checked["methods"], datasets=checked["datasets"],
        plugin_paths=[file_relative(p, base) for p in plugins.get("paths", [])],
        sweeps=checked["sweeps"], source=path, tune=checked["tune"],
    )
    return config.with_sets([parse_set(item) for item in sets or []])


#: The path-valued keys of benchmark.toml's tables besides ``[plugins] paths`` (``[datasets.<name>]``
#: holds training settings, so its ``pretrained`` too).
PATH_KEYS = {"run": ("runs_dir", "cache_dir"), "train": ("pretrained",)}


def file_relative(value: str, base: Path) -> Path:
    """A path written in benchmark.toml: ``~`` expanded, a relative one taken from the file's folder ``base``."""
    return base / Path(value).expanduser()  # an absolute path replaces base


def _paths_relative_to(checked: dict[str, Any], base: Path) -> None:
    """Make the paths a benchmark.toml sets absolute, relative to its folder ``base``, in place.

    One rule for every path in the file, whatever the working directory: the file and what it
    names move together. Paths given on the command line (flags, ``--set``) are applied later and
    stay relative to the working directory. "" (the built-in default) stays "". None of these
    paths enters a run id (runs_dir and cache_dir are not in the spec; a pretrained file enters
    by its sha256).
    """
    tables = [(checked["run"], PATH_KEYS["run"]), (checked["train"], PATH_KEYS["train"])]
    tables += [(table, PATH_KEYS["train"]) for table in checked["datasets"].values()]
    for table, keys in tables:
        for key in keys:
            if isinstance(table.get(key), str) and table[key].strip():  # other types: the type check names them
                table[key] = str(file_relative(table[key], base))


def _check_structure(raw: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Check the sections of a parsed benchmark.toml; returns them as plain dicts."""
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        where = f" in {path}" if path else ""
        raise ConfigError(f"unknown section or key {unknown[0]!r}{where}; known: {', '.join(sorted(TOP_LEVEL))}.")
    for section in sorted(TOP_LEVEL):
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] must be a table, got {raw[section]!r}.")
    for section in ("methods", "datasets", "sweeps"):
        for name, table in raw.get(section, {}).items():
            if not isinstance(table, dict):
                raise ConfigError(f"[{section}.{name}] must be a table of settings, got {table!r}.")
    for name, table in raw.get("datasets", {}).items():
        if "options" in table and not isinstance(table["options"], dict):
            raise ConfigError(f"[datasets.{name}.options] must be a table, got {table['options']!r}.")
    tune = _check_tune(raw.get("tune", {}), path)
    plugins = raw.get("plugins", {})
    unknown_plugins = sorted(set(plugins) - {"paths"})
    if unknown_plugins:
        raise ConfigError(f"unknown key plugins.{unknown_plugins[0]}; known keys: paths.")
    paths = plugins.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError("plugins.paths must be a list of folder paths.")
    # Check [run] and [train] keys now, so a typo fails before any plugin is loaded; the message
    # names the file as well as the key (a flag's message names the flag).
    try:
        build_options(RunDefaults, dict(raw.get("run", {})), "run")
        build_options(TrainSettings, dict(raw.get("train", {})), "train")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None
    return {
        "run": dict(raw.get("run", {})), "train": dict(raw.get("train", {})),
        "methods": {k: dict(v) for k, v in raw.get("methods", {}).items()},
        "datasets": {k: dict(v) for k, v in raw.get("datasets", {}).items()},
        "sweeps": {k: dict(v) for k, v in raw.get("sweeps", {}).items()},
        "tune": tune,
    }


def _check_tune(tune: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """The structure of ``[tune]``: tables only (the values need the methods: :mod:`nlbench.tune.space`)."""
    where = f" in {path}" if path else ""
    unknown = sorted(set(tune) - set(TUNE_TABLES))
    if unknown:
        raise ConfigError(f"unknown key tune.{unknown[0]}{where}; known: {', '.join(TUNE_TABLES)} "
                          f"([tune.spaces.METHOD], [tune.shared]).")
    spaces, shared = tune.get("spaces", {}), tune.get("shared", {})
    if not isinstance(spaces, dict) or not all(isinstance(t, dict) for t in spaces.values()):
        raise ConfigError(f"[tune.spaces]{where} must hold one table per method, e.g. [tune.spaces.cct], got {spaces!r}.")
    if not isinstance(shared, dict):
        raise ConfigError(f"[tune.shared]{where} must be a table of [train] settings, got {shared!r}.")
    return {"spaces": {k: dict(v) for k, v in spaces.items()}, "shared": dict(shared)}


def parse_set(item: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is read as TOML (numbers, booleans, lists), else as a string."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. methods.cct.lambda_max=0.8), got {item!r}.")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set has an empty key in {item!r}.")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Assign ``value`` at the dotted ``key`` of a nested dict, creating tables on the way."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a table.")
        node = child
    node[parts[-1]] = value
