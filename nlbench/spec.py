"""Resolving a run request (CLI flags + benchmark.toml + plugin defaults) into a RunSpec.

The spec is complete and canonical: everything that changes the numbers of a run is in it, and
its hash is the run id. Where files are kept (data root, runs folder) and the device are recorded
but do not enter the id, so the same experiment has the same id on a laptop and on a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlbench.backbone import file_sha256
from nlbench.config import Config
from nlbench.dataset import build_options
from nlbench.errors import ConfigError, UsageError
from nlbench.noise import MODES, check_rate
from nlbench.plugins import Registry

NOISE_SOURCES = ("injected", "dataset")
NOT_IN_ID = ("data_root", "pretrained_path")


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
    train_overrides: dict[str, Any] = field(default_factory=dict)


def resolve_spec(request: RunRequest, config: Config, registry: Registry) -> dict[str, Any]:
    """Build the canonical run spec, checking every value; raises UsageError/ConfigError."""
    defaults = config.run_defaults()
    method_name = request.method or defaults.method
    dataset_name = request.dataset or defaults.dataset
    method_cls = registry.method(method_name)
    dataset_cls = registry.dataset(dataset_name)

    rate = check_rate(request.noise if request.noise is not None else defaults.noise)
    mode = request.noise_mode or defaults.noise_mode
    if mode not in MODES:
        raise UsageError(f"unknown noise mode {mode!r}; choose one of {', '.join(MODES)}.")
    source = request.noise_source or defaults.noise_source
    if source not in NOISE_SOURCES:
        raise UsageError(f"unknown noise source {source!r}; choose injected or dataset.")
    seed = request.seed if request.seed is not None else defaults.seed
    if seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed}.")

    overrides = dict(request.train_overrides)
    if request.epochs is not None:
        if request.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {request.epochs}.")
        overrides["epochs"] = request.epochs
    if request.pretrained is not None:
        overrides["pretrained"] = request.pretrained
    settings = config.train_settings(dict(dataset_cls.train_defaults), dataset_name, overrides)

    hp = build_options(method_cls.HParams, config.method_hparams(method_name), f"methods.{method_name}")
    try:
        method_cls.validate(hp, {"epochs": settings.epochs, "noise_rate": rate, "batch_size": settings.batch_size})
    except ValueError as err:
        raise ConfigError(f"method {method_name!r}: {err}") from None
    # Check the hyperparameter tables of other registered methods too, so typos surface early.
    for other, values in config.methods.items():
        if other != method_name and other in registry.methods:
            build_options(registry.method(other).HParams, values, f"methods.{other}")

    dataset_options = build_options(
        dataset_cls.Options, config.dataset_options(dataset_name), f"datasets.{dataset_name}.options"
    )
    data_root = request.data_root
    if data_root is None and dataset_cls.needs_root:
        raise UsageError(
            f"dataset {dataset_name!r} reads files from disk: give their folder with --data-root PATH "
            f"(nlbench never downloads data)."
        )
    pretrained_path = None
    pretrained_sha = None
    if settings.pretrained:
        path = Path(settings.pretrained).expanduser()
        if not path.is_file():
            raise UsageError(f"pretrained file {str(path)!r} does not exist; give the path of a downloaded checkpoint.")
        pretrained_path = str(path.resolve())
        pretrained_sha = file_sha256(path)
    train = dataclasses.asdict(settings)
    train.pop("pretrained")
    # How the cache is placed changes speed, not numbers: keep it out of the run id.
    runtime = {"cache_on_device": train.pop("cache_on_device"), "compile": train.pop("compile")}

    spec = {
        "method": method_name,
        "hparams": dataclasses.asdict(hp),
        "dataset": dataset_name,
        "dataset_version": dataset_cls.version,
        "dataset_options": dataclasses.asdict(dataset_options),
        "noise": {"rate": rate, "mode": mode, "source": source},
        "seed": seed,
        "train": train,
        "pretrained_sha256": pretrained_sha,
        "data_root": str(Path(data_root).expanduser().resolve()) if data_root else None,
        "pretrained_path": pretrained_path,
        "runtime": runtime,
    }
    spec["run_id"] = run_id(spec)
    return spec


def run_id(spec: dict[str, Any]) -> str:
    """Short hash of everything in the spec that changes the numbers."""
    identity = {k: v for k, v in spec.items() if k not in NOT_IN_ID + ("run_id", "runtime")}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
