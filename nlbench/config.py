"""Settings: benchmark.toml, dataset defaults and command-line overrides merged into one config.

Precedence, lowest first: the defaults in this module (the paper's shared pipeline) < ``[train]``
of benchmark.toml < the dataset plugin's ``train_defaults`` < ``[datasets.<name>]`` of
benchmark.toml < command-line flags and ``--set key=value``. Every key is checked: an unknown
one is an error that names it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from nlbench.dataset import build_options, coerce
from nlbench.errors import ConfigError

CONFIG_ENV = "NLBENCH_CONFIG"
CONFIG_NAME = "benchmark.toml"


@dataclass
class TrainSettings:
    """The shared training pipeline every method runs on (methods.md Part A)."""

    epochs: int = 40
    batch_size: int = 256
    image_size: int = 224
    backbone: str = "resnet18"
    backbone_lr: float = 1e-3
    classifier_lr: float = 1e-2
    lr_decay: float = 0.95
    weight_decay: float = 0.0
    #: Training augmentation: "" = the dataset's own pipeline, or cct | affectnet | scn | none.
    augmentation: str = ""
    #: Class-balanced oversampling by the observed (noisy) labels (methods.md §1.4).
    balanced_sampling: bool = False
    #: Stop an epoch after this many steps (0 = all); the CCT code caps epochs at 401 steps.
    max_steps_per_epoch: int = 0
    drop_last: bool = True
    eval_batch_size: int = 512
    #: k of the "mean of the last k epochs" metric.
    last_k: int = 10
    #: MS-Celeb-1M (SCN/CCT format) or torchvision/timm-keyed ResNet-18 file; "" = random init.
    pretrained: str = ""
    #: bf16 autocast on CUDA (no effect on the CPU).
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    #: Keep the uint8 image cache on the training device: "auto" (if it fits), "yes" or "no".
    cache_on_device: str = "auto"

    def check(self) -> None:
        """Raise ConfigError for values no run can use."""
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not 8 <= self.image_size <= 1024:
            raise ConfigError(f"image_size must be between 8 and 1024 pixels, got {self.image_size}.")
        if self.backbone_lr <= 0 or self.classifier_lr <= 0:
            raise ConfigError("backbone_lr and classifier_lr must be positive.")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}.")
        if self.augmentation not in ("", "cct", "affectnet", "scn", "none"):
            raise ConfigError(
                f"augmentation must be one of cct, affectnet, scn, none (or empty), got {self.augmentation!r}."
            )
        if self.cache_on_device not in ("auto", "yes", "no"):
            raise ConfigError(f"cache_on_device must be auto, yes or no, got {self.cache_on_device!r}.")
        if self.last_k < 1:
            raise ConfigError(f"last_k must be at least 1, got {self.last_k}.")


@dataclass
class RunDefaults:
    """What ``nlbench run`` does without arguments (``[run]`` of benchmark.toml)."""

    method: str = "cct"
    dataset: str = "synthfer"
    noise: float = 0.2
    noise_mode: str = "flip"
    noise_source: str = "injected"
    seed: int = 1
    device: str = "auto"
    runs_dir: str = "runs"
    cache_dir: str = ""


TOP_LEVEL = {"run", "train", "methods", "datasets", "plugins", "sweep"}


@dataclass
class Config:
    """The merged contents of benchmark.toml and ``--set`` overrides, checked key by key."""

    run: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugin_paths: list[Path] = field(default_factory=list)
    sweep: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def run_defaults(self) -> RunDefaults:
        """The ``[run]`` section on top of the built-in defaults."""
        return build_options(RunDefaults, self.run, "run")

    def train_settings(self, dataset_defaults: dict[str, Any], dataset: str, overrides: dict[str, Any]) -> TrainSettings:
        """Resolve the training settings of one run (see the module docstring for the order)."""
        merged: dict[str, Any] = {}
        merged.update(self.train)
        merged.update(dataset_defaults)
        merged.update({k: v for k, v in self.datasets.get(dataset, {}).items() if k != "options"})
        merged.update(overrides)
        settings = build_options(TrainSettings, merged, f"train (dataset {dataset})")
        settings.check()
        return settings

    def dataset_options(self, dataset: str) -> dict[str, Any]:
        """``[datasets.<name>.options]``: options passed to the dataset plugin."""
        return dict(self.datasets.get(dataset, {}).get("options", {}))

    def method_hparams(self, method: str) -> dict[str, Any]:
        """``[methods.<name>]``: hyperparameters overriding the method's defaults."""
        return dict(self.methods.get(method, {}))


def find_config(explicit: str | Path | None = None) -> Path | None:
    """The benchmark.toml to read: ``--config``, then $NLBENCH_CONFIG, then ./benchmark.toml."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist.")
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"${CONFIG_ENV} points to {str(path)!r}, which does not exist.")
        return path
    local = Path.cwd() / CONFIG_NAME
    return local if local.is_file() else None


def load_config(path: Path | None, sets: list[str] | None = None) -> Config:
    """Read and check a benchmark.toml (``None``: built-in defaults), then apply ``--set`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}. Fix the file or pass another with --config.") from None
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror}.") from None
    for item in sets or []:
        key, value = parse_set(item)
        set_dotted(raw, key, value)
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        where = f" in {path}" if path else ""
        raise ConfigError(f"unknown section or key {unknown[0]!r}{where}; known: {', '.join(sorted(TOP_LEVEL))}.")
    for section in ("run", "train", "methods", "datasets", "plugins", "sweep"):
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] must be a table, got {raw[section]!r}.")
    for section in ("methods", "datasets"):
        for name, table in raw.get(section, {}).items():
            if not isinstance(table, dict):
                raise ConfigError(f"[{section}.{name}] must be a table of settings, got {table!r}.")
    plugins = raw.get("plugins", {})
    unknown_plugins = sorted(set(plugins) - {"paths"})
    if unknown_plugins:
        raise ConfigError(f"unknown key plugins.{unknown_plugins[0]}; known keys: paths.")
    base = path.parent if path is not None else Path.cwd()
    paths = plugins.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError("plugins.paths must be a list of folder paths.")
    config = Config(
        run=dict(raw.get("run", {})),
        train=dict(raw.get("train", {})),
        methods={k: dict(v) for k, v in raw.get("methods", {}).items()},
        datasets={k: dict(v) for k, v in raw.get("datasets", {}).items()},
        plugin_paths=[(base / p).expanduser() for p in paths],
        sweep=dict(raw.get("sweep", {})),
        source=path,
    )
    # Check [run] and [train] keys now, so a typo fails before any plugin is loaded.
    config.run_defaults()
    build_options(TrainSettings, config.train, "train")
    return config


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


def coerce_value(value: Any, default: Any, where: str) -> Any:
    """Re-export of :func:`nlbench.dataset.coerce` for method hyperparameters."""
    return coerce(value, default, where)


def as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance as a plain dict."""
    return dataclasses.asdict(obj)
