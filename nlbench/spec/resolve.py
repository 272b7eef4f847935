"""How a request becomes a run: the one precedence rule, every value checked, the data opened.

Precedence of settings, lowest first, resolved in :func:`resolve_spec` and nowhere else::

    built-in defaults < [train] < the dataset plugin's train_defaults < [datasets.<name>]
    < command-line flags and --set

A dataset is named by its instance (``[datasets.<name>]`` with ``plugin = ...``, or a plugin's own
name): :meth:`nlbench.spec.config.Config.dataset_plugin` maps the name to its plugin, and the spec
records both (:class:`nlbench.spec.runspec.DataSpec`).

Provenance: :func:`resolve_spec` can say where each value of the spec came from (``sources``, or
every spec resolved inside :func:`recording_sources`), labelled as it applies the precedence, so
``nlbench config`` shows the resolution itself rather than a second account of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlbench.data.noise import check_rate
from nlbench.errors import ConfigError, UsageError
from nlbench.identity import file_sha256
from nlbench.options import build_options, check_value, identity_dict, option_infos
from nlbench.settings import NOISE_MODES, RunDefaults, TrainSettings
from nlbench.spec.config import Config, parse_set
from nlbench.spec.runspec import DataSpec, FrozenMap, NoiseSpec, RunSpec

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.dataset import Dataset
    from nlbench.registry import Registry


@dataclass
class RunRequest:
    """What the user asked for on the command line (None = take the configured default)."""

    method: str | None = None
    dataset: str | None = None
    noise: float | None = None
    noise_mode: str | None = None
    noise_source: str | None = None
    seed: int | None = None
    epochs: int | None = None
    data_root: str | None = None
    pretrained: str | None = None
    device: str | None = None
    cache_dir: str | None = None
    #: A noise file (``nlbench noise export`` or a ``name label`` list) to train on.
    noise_file: str | None = None
    #: First class number of a list noise file (None: the dataset's convention).
    noise_file_base: int | None = None
    #: Raw ``--set key=value`` items: ``train.*`` ones rank with the flags, the others change
    #: their table of benchmark.toml.
    sets: list[str] = field(default_factory=list)


def split_sets(items: list[str]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Parse ``--set`` items into (train overrides, other assignments)."""
    train: dict[str, Any] = {}
    other: list[tuple[str, Any]] = []
    for item in items:
        key, value = parse_set(item)
        section, _, rest = key.partition(".")
        if section == "train":
            if not rest or "." in rest:
                raise ConfigError(f"--set {key}: training settings are train.<name>, e.g. train.batch_size=64.")
            train[rest] = value
        else:
            other.append((key, value))
    return train, other


#: The specs resolved inside :func:`recording_sources`, each with its sources (None: not recording).
_RECORDED: ContextVar[list[tuple[RunSpec, dict[str, str]]] | None] = ContextVar("nlbench_sources", default=None)


@contextmanager
def recording_sources() -> Iterator[list[tuple[RunSpec, dict[str, str]]]]:
    """Collect (spec, sources) of every :func:`resolve_spec` call inside the block, in call order.

    For callers that resolve through code that does not pass ``sources`` on, e.g. a sweep's
    :func:`nlbench.sweep.grid.expand`.
    """
    recorded: list[tuple[RunSpec, dict[str, str]]] = []
    token = _RECORDED.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDED.reset(token)


def _table_source(set_items: list[tuple[str, Any]], key: str, table: str) -> str:
    """Where a value of a benchmark.toml table came from: the last ``--set`` item that assigned
    the dotted ``key`` (or a table holding it), else the file's ``table``."""
    label = table
    for set_key, _ in set_items:
        if key == set_key or key.startswith(set_key + "."):
            label = f"--set {set_key}"
    return label


def resolve_spec(request: RunRequest, config: Config, registry: Registry,
                 datasets: dict[tuple, Dataset] | None = None, sources: dict[str, str] | None = None) -> RunSpec:
    """Build the canonical run spec, checking every value; raises UsageError/ConfigError.

    ``datasets`` memoises opened datasets across calls (a sweep resolves many specs on the same
    files); the dataset is opened and its layout checked here, so a wrong data root is a usage
    error before any run folder exists. ``sources``, when given, is filled with where each value
    of the spec came from, by dotted key of :meth:`RunSpec.to_json` (``train.epochs`` ->
    "default", "[train]", "dataset default", "[datasets.<name>]", "--set <key>", "--epochs", ...).
    """
    from nlbench.dataset import open_dataset

    train_sets, other_sets = split_sets(request.sets)
    config = config.with_sets(other_sets)
    origin: dict[str, str] = {}

    def run_source(value: Any, name: str, flag_name: str) -> str:
        """Where a [run] setting came from: its flag, [run] (or --set run.<name>), else the default."""
        if value is not None:
            return flag_name
        return _table_source(other_sets, f"run.{name}", "[run]") if name in config.run else "default"

    check_plugin_tables(config, registry)
    defaults: RunDefaults = config.run_defaults()
    for value, flag_name in ((request.method, "--method"), (request.dataset, "--dataset"),
                             (request.noise_mode, "--noise-mode"), (request.device, "--device")):
        if value is not None and not value.strip():  # "" would silently mean the default
            raise UsageError(f"{flag_name} is empty; give a value or leave the flag out for the configured default.")
    method_name = request.method or defaults.method
    dataset_name = request.dataset or defaults.dataset
    method_cls = registry.method(method_name)
    dataset_plugin = config.dataset_plugin(dataset_name, registry)
    dataset_cls = registry.dataset(dataset_plugin)

    infos = {info.name: info for info in option_infos(RunDefaults)}

    def flag(value: Any, name: str, flag_name: str) -> Any:
        if value is None:
            return getattr(defaults, name)
        try:
            return check_value(value, infos[name], flag_name)
        except ConfigError as err:
            raise UsageError(str(err)) from None

    rate = check_rate(request.noise if request.noise is not None else defaults.noise)
    mode = request.noise_mode or defaults.noise_mode
    if mode not in NOISE_MODES:
        raise UsageError(f"unknown noise mode {mode!r}; choose one of {', '.join(NOISE_MODES)}.")
    source = flag(request.noise_source, "noise_source", "--noise-source")
    seed = flag(request.seed, "seed", "--seed")

    overrides = dict(train_sets)
    override_sources = {key: f"--set train.{key}" for key in train_sets}
    if request.epochs is not None:
        if request.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {request.epochs}.")
        overrides["epochs"], override_sources["epochs"] = request.epochs, "--epochs"
    if request.pretrained is not None:
        overrides["pretrained"], override_sources["pretrained"] = request.pretrained, "--pretrained"
    settings = resolve_train_settings(config, dataset_cls, dataset_name, overrides, origin,
                                      override_sources=override_sources, set_items=other_sets)
    pretrained_sha = None
    if settings.pretrained:
        path = Path(settings.pretrained).expanduser()
        if path.is_dir():
            raise UsageError(f"pretrained file {str(path)!r} is a folder; give the path of the checkpoint file in it.")
        if not path.is_file():
            raise UsageError(f"pretrained file {str(path)!r} does not exist; give the path of a downloaded checkpoint.")
        settings = dataclasses.replace(settings, pretrained=str(path.resolve()))
        pretrained_sha = file_sha256(path)

    options = build_options(dataset_cls.Options, config.dataset_options(dataset_name), f"datasets.{dataset_name}.options")
    root = request.data_root
    if root is None and dataset_cls.needs_root:
        raise UsageError(
            f"dataset {dataset_name!r} reads files from disk: give their folder with --data-root PATH "
            f"(nlbench never downloads data)."
        )
    root_path = str(Path(root).expanduser().resolve()) if root else None
    options_json = FrozenMap(identity_dict(options))  # options added later enter the id only when set
    dataset = open_dataset(dataset_cls, root_path, options_json, datasets, instance=dataset_name)
    if source == "injected" and mode == "fer-confusion" and request.noise_file is None:
        from nlbench.data.fer_confusion import flip_targets

        flip_targets(tuple(dataset.class_names))  # classes it cannot map are a usage error now, not mid-run
    file_path = file_sha = None
    if request.noise_file is not None:
        if request.noise_source is not None:
            raise UsageError("--noise-file gives the training labels: leave out --noise-source.")
        from nlbench.data.noise_file import labels_from_file

        file_path = Path(request.noise_file).expanduser()
        if file_path.is_dir():
            raise UsageError(f"noise file {str(file_path)!r} is a folder; give the path of the file.")
        if not file_path.is_file():
            raise UsageError(f"noise file {str(file_path)!r} does not exist.")
        file_path = file_path.resolve()
        file_sha = file_sha256(file_path)
        # Read and checked now (every training sample covered), so a wrong file fails before any run folder.
        rate = labels_from_file(str(file_path), dataset, dataset.table("train"), expected_sha256=file_sha,
                                label_base=request.noise_file_base).realised_rate
        source, mode = "file", "file"
    elif source == "dataset":
        # Real noise: the rate is the one the dataset's noisy labels realise, never the [run]
        # default, so a method that sets its forget rate from the noise rate uses the true one.
        rate = dataset_noise_rate(dataset, int(seed))

    method_values = config.method_hparams(method_name)
    hp = build_hparams(method_cls, method_values, epochs=settings.epochs, noise_rate=rate,
                       batch_size=settings.batch_size, run_settings=method_settings(settings, dataset),
                       sources=origin, value_sources={
                           key: _table_source(other_sets, f"methods.{method_name}.{key}", f"[methods.{method_name}]")
                           for key in method_values})
    if (source in ("dataset", "file") and rate == 0 and getattr(method_cls, "uses_noise_rate", False)
            and getattr(hp, "forget_rate", 0.0) == -1.0):
        raise UsageError(
            f"dataset {dataset_name!r} does not reveal the noise rate of its own noisy labels (they agree with its "
            f"reference labels), so {method_name} cannot set its forget rate from it: give it explicitly, e.g. "
            f"--set methods.{method_name}.forget_rate=0.3.")
    device = request.device or defaults.device
    if device not in ("auto", "cpu") and not (device.startswith("cuda") and device[4:] in ("",) + tuple(
            f":{i}" for i in range(64))):
        where = "--device" if request.device else f"[run] device in {config.source or 'benchmark.toml'}"
        raise UsageError(f"{where}: unknown device {device!r}; use auto, cpu, cuda or cuda:N.")
    cache_dir = request.cache_dir if request.cache_dir is not None else defaults.cache_dir
    spec = RunSpec(
        method=method_name, hparams=FrozenMap(dataclasses.asdict(hp)),
        data=DataSpec(name=dataset_name, version=str(dataset_cls.version), options=options_json,
                      fingerprint=dataset.fingerprint(), root=root_path, plugin=dataset_plugin,
                      landmarks=landmarks_of(method_cls, hp, dataset, method_name)),
        noise=NoiseSpec(rate=float(rate), mode=mode, source=source, file_sha256=file_sha,
                        file_label_base=request.noise_file_base if file_path else None,
                        file=str(file_path) if file_path else None), seed=int(seed), train=settings,
        pretrained_sha256=pretrained_sha, device=device, cache_dir=str(cache_dir or ""),
    )
    by_file = "--noise-file" if file_path else None
    origin.update({
        "method": run_source(request.method, "method", "--method"),
        "seed": run_source(request.seed, "seed", "--seed"),
        "device": run_source(request.device, "device", "--device"),
        "cache_dir": run_source(request.cache_dir, "cache_dir", "--cache-dir"),
        "pretrained_sha256": f"the file of train.pretrained ({origin['train.pretrained']})",
        "data.name": run_source(request.dataset, "dataset", "--dataset"),
        "data.version": f"the {dataset_plugin} plugin", "data.fingerprint": "the dataset's files",
        "data.root": "--data-root",
        "data.plugin": _table_source(other_sets, f"datasets.{dataset_name}.plugin", f"[datasets.{dataset_name}]"),
        "noise.rate": by_file or ("the dataset's own noisy labels" if source == "dataset"
                                  else run_source(request.noise, "noise", "--noise")),
        "noise.mode": by_file or run_source(request.noise_mode, "noise_mode", "--noise-mode"),
        "noise.source": by_file or run_source(request.noise_source, "noise_source", "--noise-source"),
        "noise.file_sha256": "the noise file's bytes", "noise.file": "--noise-file",
        "noise.file_label_base": "--noise-file-base",
    })
    user_options = config.dataset_options(dataset_name)
    origin.update({f"data.options.{key}": _table_source(other_sets, f"datasets.{dataset_name}.options.{key}",
                                                        f"[datasets.{dataset_name}.options]")
                   if key in user_options else "default" for key in options_json})
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded.append((spec, dict(origin)))
    if sources is not None:
        sources.update(origin)
    return spec


def dataset_noise_rate(dataset: Any, seed: int = 1) -> float:
    """The share of the dataset's own noisy training labels that differ from its clean ones (votes drawn with ``seed``).

    The votes are drawn as the run draws them: seeded by the dataset's name (its instance name)."""
    from nlbench.data.noise import dataset_noise

    name = getattr(dataset, "instance", dataset.name)
    return round(dataset_noise(dataset.table("train"), dataset=name, seed=seed).realised_rate, 6)


def landmarks_of(method_cls: type, hp: Any, dataset: Any, method_name: str) -> str | None:
    """``scheme@version`` of the landmarks a run trains on (None: its method needs none), so the
    landmark definition is in the id of the runs that use it, and of no other run."""
    if not getattr(method_cls(hp), "needs_landmarks", False):
        return None
    if dataset.landmark_scheme is None:  # the method's validate should have said so; never train without them
        raise UsageError(f"method {method_name!r} trains on facial landmarks, and dataset {dataset.instance!r} "
                         f"has none.")
    return f"{dataset.landmark_scheme}@{dataset.landmark_version}"


def method_settings(settings: TrainSettings, dataset: Any) -> dict[str, Any]:
    """The run settings a method's ``validate`` sees besides epochs, noise rate and batch size."""
    return {"image_size": settings.image_size, "augmentation": settings.augmentation or dataset.augmentation,
            "drop_last": settings.drop_last, "backbone": settings.backbone, "dataset": dataset.name,
            "num_classes": dataset.num_classes, "balanced_sampling": settings.balanced_sampling,
            "has_landmarks": dataset.landmark_scheme is not None, "landmark_scheme": dataset.landmark_scheme}


def build_hparams(method_cls: type, values: dict[str, Any], *, epochs: int, noise_rate: float,
                  batch_size: int, run_settings: dict[str, Any] | None = None, sources: dict[str, str] | None = None,
                  value_sources: dict[str, str] | None = None) -> Any:
    """A method's hyperparameters from a dict: typed, range-checked, the method's own ``validate``,
    then its ``canonical`` form (settings without effect reset, so equivalent runs share an id).

    ``run_settings`` completes what ``validate`` sees (:func:`method_settings`); unit tests may
    leave it out and get the shared pipeline's defaults. ``sources``, when given, is filled with
    where each hyperparameter came from (``hparams.<key>`` -> ``value_sources[key]``, "default" for
    keys it lacks, or a note that the canonical form reset it)."""
    where = f"methods.{method_cls.name}"
    hp = build_options(method_cls.HParams, values, where)
    seen = {"image_size": 224, "augmentation": "cct", "drop_last": True, "backbone": "resnet18", "dataset": "",
            "num_classes": 7, "balanced_sampling": False, "has_landmarks": False, "landmark_scheme": None,
            **(run_settings or {})}
    try:
        method_cls.validate(hp, {"epochs": epochs, "noise_rate": noise_rate, "batch_size": batch_size, **seen})
    except ValueError as err:
        raise ConfigError(f"method {method_cls.name!r}: {err}") from None
    canonical = method_cls.canonical(hp)
    if sources is not None:
        for item in dataclasses.fields(canonical):
            label = (value_sources or {}).get(item.name, "default")
            if getattr(canonical, item.name) != getattr(hp, item.name):
                label = f"reset: no effect in this run (was {getattr(hp, item.name)!r}, {label})"
            sources[f"hparams.{item.name}"] = label
    return canonical


def resolve_train_settings(config: Config, dataset_cls: type, dataset_name: str, overrides: dict[str, Any],
                           sources: dict[str, str] | None = None, *, override_sources: dict[str, str] | None = None,
                           set_items: list[tuple[str, Any]] | None = None) -> TrainSettings:
    """The training settings of one run, in the precedence of the module docstring.

    ``sources``, when given, is filled with where each setting came from (``train.<key>`` ->
    "default", "[train]", "dataset default", "[datasets.<name>]" or the last of ``set_items`` (the
    ``--set`` items already applied to ``config``) that assigned it, or ``override_sources[key]``
    ("flag" for keys it lacks)."""
    table = f"[datasets.{dataset_name}]"
    layers = (
        (config.train, lambda key: "[train]"),
        (dict(getattr(dataset_cls, "train_defaults", {}) or {}), lambda key: "dataset default"),
        (config.dataset_train(dataset_name),
         lambda key: _table_source(set_items or [], f"datasets.{dataset_name}.{key}", table)),
        (overrides, lambda key: (override_sources or {}).get(key, "flag")),
    )
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for values, label in layers:  # lowest precedence first: a later layer's key replaces an earlier one's
        merged.update(values)
        origin.update({key: label(key) for key in values})
    settings = build_options(TrainSettings, merged, "train")
    if sources is not None:
        sources.update({f"train.{item.name}": origin.get(item.name, "default")
                        for item in dataclasses.fields(TrainSettings)})
    return settings


def check_plugin_tables(config: Config, registry: Registry) -> None:
    """Every ``[methods.<name>]`` table names a registered method and every ``[datasets.<name>]`` a
    registered dataset or, with ``plugin``, an instance of one (:meth:`Config.dataset_plugin`); each
    holds only the keys of its plugin."""
    for section, table, lookup in (("methods", config.methods, registry.methods),
                                   ("datasets", config.datasets, registry.datasets)):
        for name, values in table.items():
            if section == "methods" and "plugin" in values:
                raise ConfigError(f"methods.{name}.plugin: only a dataset can be an instance of a plugin "
                                  f"([datasets.NAME] with plugin = ...); a method is named by its plugin, so remove "
                                  f"the key.")
            if name not in lookup and "plugin" not in values:
                instances = config.dataset_instances() if section == "datasets" else {}
                known = ", ".join(sorted([*lookup, *(f"{n} ({p})" for n, p in instances.items())])) or "(none)"
                failed = [p.name for p in registry.plugins if not p.ok]
                hint = f" Some plugins failed to load ({', '.join(failed)}): see `nlbench plugins`." if failed else ""
                instance = (f" To make {name!r} a dataset of its own, name its plugin: "
                            f"[datasets.{name}] plugin = \"csvlabels\" (or another)." if section == "datasets" else "")
                raise ConfigError(f"{section}.{name}: no {section[:-1]} is called {name!r}; known: {known}.{hint}"
                                  f"{instance}")
            if section == "methods":
                build_options(lookup[name].cls.HParams, values, f"methods.{name}")
            else:
                cls = config.dataset_class(name, registry)
                build_options(cls.Options, dict(values.get("options", {})), f"datasets.{name}.options")
                build_options(TrainSettings, config.dataset_train(name), f"datasets.{name}")
