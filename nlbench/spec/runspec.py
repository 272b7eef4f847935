"""What one run is: the typed, frozen :class:`RunSpec` and its run id.

A :class:`RunSpec` is complete and canonical: everything that can change the numbers of a run is
in it, and the run id is the hash of its canonical JSON. Fields declared with
:func:`nlbench.options.runtime` (where the data and the pretrained file lie on this machine, the
device, the image cache's place, ``torch.compile``, the evaluation batch size) are recorded in
``spec.json`` but never enter the id, so the same experiment has the same id on a laptop and on a
cluster node. The data enters the id by content (:meth:`nlbench.Dataset.fingerprint`), not by
path: other files give another id, the same files at another path the same one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlbench.errors import ConfigError
from nlbench.identity import short_hash
from nlbench.options import ADDED, RUNTIME, is_runtime, runtime
from nlbench.settings import TrainSettings

#: Field metadata: leave the field out of the spec's JSON while it is None.
OMIT_NONE = "nlbench_omit_none"


class FrozenMap(dict):
    """A read-only dict (JSON-serialisable and picklable, unlike ``MappingProxyType``)."""

    def _frozen(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a RunSpec is frozen: use dataclasses.replace to derive another one")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _frozen  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return (FrozenMap, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(short_hash(self))


@dataclass(frozen=True)
class NoiseSpec:
    """The label noise of a run: injected at ``rate`` in ``mode``, or the dataset's own labels."""

    rate: float
    mode: str = "flip"
    #: "injected" (drawn by the engine), "dataset" (the dataset's own noisy training labels) or
    #: "file" (the labels of a noise file, :mod:`nlbench.data.noise_file`).
    source: str = "injected"
    #: SHA-256 of the noise file's bytes (source "file"): the labels enter the run id by content.
    file_sha256: str | None = field(default=None, metadata={OMIT_NONE: True})
    #: First class number of a ``name label`` list noise file (None: the dataset's ``list_label_base``).
    file_label_base: int | None = field(default=None, metadata={OMIT_NONE: True})
    #: Where the noise file is on this machine.
    file: str | None = field(default=None, metadata={OMIT_NONE: True, RUNTIME: True})


@dataclass(frozen=True)
class DataSpec:
    """Which data a run trains on: the dataset (its name and plugin), the plugin's version and
    options, and the files."""

    #: The dataset's name: a configured instance (``[datasets.<name>]``) or a plugin's own name.
    #: Runs are stored, listed and reported under it.
    name: str
    version: str = "1"
    options: FrozenMap = field(default_factory=FrozenMap)
    #: Content identity of the files read (None for generated datasets: name, version and
    #: options say everything).
    fingerprint: str | None = None
    #: Where the files are on this machine.
    root: str | None = runtime(None)
    #: The dataset plugin ``name`` is an instance of; None (and left out of the JSON, so of the run
    #: id) when it is the plugin of that name, as every run before instances was. A worker opens
    #: the plugin from this field alone (:attr:`plugin_name`), never from benchmark.toml.
    plugin: str | None = field(default=None, metadata={OMIT_NONE: True})
    #: ``scheme@version`` of the facial landmarks the run's method trains on; None (and left out of
    #: the JSON, so of the run id) for the runs of every method that needs none.
    landmarks: str | None = field(default=None, metadata={OMIT_NONE: True})

    def __post_init__(self) -> None:
        if self.plugin == self.name:  # an instance of itself: the id of the same run without the field
            object.__setattr__(self, "plugin", None)

    @property
    def plugin_name(self) -> str:
        """The registered dataset plugin to open: :attr:`plugin`, else :attr:`name`."""
        return self.plugin or self.name


@dataclass(frozen=True)
class RunSpec:
    """One run, fully resolved. ``run_id`` hashes every field not declared as runtime."""

    method: str
    hparams: FrozenMap
    data: DataSpec
    noise: NoiseSpec
    seed: int
    train: TrainSettings
    #: SHA-256 of the pretrained file (None: random initialisation).
    pretrained_sha256: str | None = None
    #: auto, cpu or cuda[:N]: where the run trains (resolved by the engine).
    device: str = runtime("auto")
    #: Decoded-image cache folder ("" = the default).
    cache_dir: str = runtime("")

    @property
    def run_id(self) -> str:
        """The short hash of :meth:`identity`."""
        return short_hash(self.identity())

    def identity(self) -> dict[str, Any]:
        """Every field that changes the numbers, as plain JSON data."""
        return _to_json(self, identity_only=True)

    def to_json(self) -> dict[str, Any]:
        """Every field (runtime ones too) plus the run id: the content of spec.json."""
        return {**_to_json(self, identity_only=False), "run_id": self.run_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        """Rebuild a spec from :meth:`to_json` output (checks the stored run id)."""
        try:
            spec = cls(
                method=data["method"], hparams=FrozenMap(data["hparams"]),
                data=DataSpec(**{**data["data"], "options": FrozenMap(data["data"]["options"])}),
                noise=NoiseSpec(**data["noise"]), seed=data["seed"], train=TrainSettings(**data["train"]),
                pretrained_sha256=data.get("pretrained_sha256"), device=data.get("device", "auto"),
                cache_dir=data.get("cache_dir", ""),
            )
        except (KeyError, TypeError) as err:
            raise ConfigError(f"not a run spec of this nlbench version ({type(err).__name__}: {err}).") from None
        if "run_id" in data and data["run_id"] != spec.run_id:
            raise ConfigError(f"spec says run id {data['run_id']} but its content hashes to {spec.run_id}.")
        return spec

    def hp(self, hparams_cls: type) -> Any:
        """The method's hyperparameters as an instance of ``hparams_cls``."""
        return hparams_cls(**self.hparams)

    @property
    def pretrained_path(self) -> Path | None:
        """The pretrained file on this machine, if any."""
        return Path(self.train.pretrained) if self.train.pretrained else None

    def describe(self) -> str:
        """One line saying what the run is."""
        noise = {"injected": f"noise {self.noise.rate:.2f} ({self.noise.mode})",
                 "dataset": "the dataset's own noisy labels",
                 "file": f"the labels of noise file {Path(self.noise.file or '?').name}"}[self.noise.source]
        return (f"{self.method} on {self.data.name}, {noise}, seed {self.seed}, {self.train.epochs} epochs, "
                f"{self.train.image_size} px, batch {self.train.batch_size}")


def _to_json(obj: Any, identity_only: bool) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # Fields added after runs were stored are left out while unset, so old run ids still hold.
        return {f.name: _to_json(getattr(obj, f.name), identity_only) for f in dataclasses.fields(obj)
                if not (identity_only and is_runtime(f))
                and not (f.metadata.get(OMIT_NONE) and getattr(obj, f.name) is None)
                and not (identity_only and f.metadata.get(ADDED) and getattr(obj, f.name) == f.default)}
    if isinstance(obj, dict):
        return {k: _to_json(v, identity_only) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v, identity_only) for v in obj]
    return obj


