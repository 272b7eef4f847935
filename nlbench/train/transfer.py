"""A finished run's deployable model used on other data: ``nlbench evaluate`` and ``nlbench predict``.

:func:`load_model` rebuilds the run's method from its stored spec (the same
:func:`~nlbench.train.assemble.build_context` and :func:`~nlbench.train.assemble.build_method` a run
trains with) and loads ``model.pt`` into it (tensors only, through the safe loader). It needs
neither the training images nor a pretrained file: the weights replace whatever the networks
were built with, and the training dataset is opened only for its preprocessing (storage size,
normalisation), which its plugin derives from the stored options, so the run's data may be gone.

Every image goes through the run's test-time preprocessing: decoded to the training dataset's
storage size (files; another dataset's images come at that dataset's storage size), resized to
the run's ``image_size`` and normalised with the training dataset's mean and std, then the
deployable model (``Method.predict``) in eval mode, in batches of ``eval_batch_size``, under the
run's autocast. Probabilities are the softmax of its scores (kept when they already are
probabilities: an ensemble's mean softmax).

Classes are matched by name (case-insensitive), never by index: a target class the model lacks is
an error unless ``--map TARGET=MODEL`` names the model class it counts as, or ``--drop-unknown``
leaves its images out (counted). Model classes the target lacks are allowed: a prediction there is
wrong. Scores are computed in the model's class space (rows of the confusion matrix: the model
class each image's label counts as; columns: the predicted class).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nlbench.context import LabelStore
from nlbench.errors import DataError, UsageError
from nlbench.seeding import derive_seed
from nlbench.train.assemble import build_augmenter, build_context, build_method, with_settings
from nlbench.train.evaluate import (
    as_probabilities,
    check_members,
    class_scores,
    confusion,
    expected_calibration_error,
    per_class_report,
)

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.data.augment import Augmenter
    from nlbench.dataset import Dataset
    from nlbench.method import Method
    from nlbench.registry import Registry
    from nlbench.result import Result
    from nlbench.spec.config import Config
    from nlbench.spec.runspec import RunSpec

#: Image files ``nlbench predict --folder`` reads (the extensions of the imagefolder dataset).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


# -- the stored model ------------------------------------------------------------------------------
def load_deployable(method: Any, weights: dict[str, Any]) -> None:
    """Load ``model.pt``'s weights (attribute -> state dict, or list of them) into a built method."""
    for key, saved in weights.items():
        value = getattr(method, key, None)
        if value is None:
            raise DataError(f"model.pt holds weights for {key!r}, which method {method.name!r} does not have.")
        if isinstance(value, (list, tuple)):
            for module, state in zip(value, saved, strict=True):
                module.load_state_dict(state)
        else:
            value.load_state_dict(saved)


def load_weights(run_dir: Path, method: Any, method_name: str) -> None:
    """Load a finished run's ``model.pt`` into its built ``method`` (safe loader; clear errors)."""
    from nlbench.safe_load import UnreadableFile, load_tensors
    from nlbench.store import MODEL

    try:
        stored = load_tensors(run_dir / MODEL)
    except UnreadableFile as err:
        raise DataError(f"{run_dir / MODEL} cannot be loaded ({err}); train the run again with --force.") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("weights"), dict):
        raise DataError(f"{run_dir / MODEL} holds no deployable weights (a dict with 'weights'); train the run "
                        f"again with --force.")
    try:
        load_deployable(method, stored["weights"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:  # other keys or shapes than the networks
        raise DataError(f"{run_dir / MODEL} does not fit method {method_name!r} ({str(err).splitlines()[0][:160]}); "
                        f"train the run again with --force.") from None


@dataclass
class StoredModel:
    """A finished run's deployable model, ready to predict, with how its inputs are prepared."""

    path: Path
    spec: RunSpec
    result: Result
    method: Method
    ctx: Any
    augmenter: Augmenter
    #: The model's classes, in the order of its outputs.
    class_names: tuple[str, ...]
    #: Side of the stored images of the training dataset: files are decoded to it, as the run's were.
    storage_size: int
    device: torch.device

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def describe_training_data(registry: Registry, spec: RunSpec, class_names: tuple[str, ...]) -> Dataset:
    """The run's dataset plugin instantiated with the run's options, without checking its files.

    Only its preprocessing is read (storage size, mean, std, pipeline): the plugins derive those
    from the options, so this works when the training data is no longer on this machine.
    """
    cls = registry.dataset(spec.data.plugin_name)
    dataset = cls.__new__(cls)
    dataset.__dict__["_instance"] = spec.data.name  # as open_dataset does, so its messages name the instance
    try:
        dataset.__init__(Path(spec.data.root) if spec.data.root else None, dict(spec.data.options))  # type: ignore[misc]
    except UsageError:
        raise
    except Exception as err:  # a plugin that reads files in its constructor
        raise DataError(f"the dataset {spec.data.name!r} the run trained on cannot be opened for its preprocessing "
                        f"({type(err).__name__}: {err}); make its data available at {spec.data.root}.") from None
    dataset.class_names = class_names  # the model's classes, whatever the data root holds now
    return dataset


def load_model(run_dir: Path, registry: Registry, device: torch.device) -> StoredModel:
    """The deployable model of the finished run in ``run_dir``, in eval mode on ``device``."""
    from nlbench.fileio import read_json_or_none
    from nlbench.result import DamagedResult, read_result
    from nlbench.spec.runspec import RunSpec
    from nlbench.store import MODEL, RESULT, SPEC, RunDir

    store = RunDir(run_dir)
    spec_json = read_json_or_none(run_dir / SPEC)
    if not isinstance(spec_json, dict):
        raise DataError(f"{run_dir / SPEC} is missing or damaged; this is not a readable run folder.")
    if not store.is_done():
        state = store.state()
        raise UsageError(f"run {spec_json.get('run_id', run_dir.name)} is not finished (it is {state.state}"
                         + (f": {state.detail}" if state.detail else "") + "); only a finished run has a model "
                         "to use. `nlbench status` shows its state; `nlbench run` or `nlbench sweep` finishes it.")
    try:
        result = read_result(run_dir / RESULT)
    except DamagedResult as err:
        raise DataError(f"{err} Training the run again with --force repairs it.") from None
    if not (run_dir / MODEL).is_file():
        raise DataError(f"{run_dir} has no {MODEL} (the deployable weights); train the run again with --force.")
    spec = RunSpec.from_json(spec_json)
    names = tuple((result.get("final", {}).get("model") or {}).get("class_names") or ())
    if not names:
        raise DataError(f"{run_dir / RESULT} does not record the model's class names; train the run again with "
                        f"--force.")
    dataset = describe_training_data(registry, spec, names)
    # The weights replace the initialisation: a pretrained file is not needed (it may be gone).
    built = with_settings(spec, pretrained="") if spec.train.pretrained else spec
    # Methods may size per-sample state by the training set; the labels themselves are never used.
    trained = int(((result.get("noise") or {}).get("trained") or {}).get("samples") or len(names))
    labels = LabelStore(np.arange(max(trained, len(names))) % len(names), device)
    torch.manual_seed(derive_seed(spec.seed, "global"))  # as the assembly does: nothing random leaks in
    ctx = build_context(built, dataset, labels, device)
    method = build_method(built, registry, ctx)
    load_weights(run_dir, method, spec.method)
    for module in method.modules():
        module.eval()
    return StoredModel(run_dir, spec, result, method, ctx, build_augmenter(spec, dataset, device), names,
                       int(dataset.storage_size), device)


@torch.no_grad()
def class_probabilities(model: StoredModel, images: torch.Tensor) -> torch.Tensor:
    """N x K class probabilities (float32, CPU) of uint8 images (N x 3 x H x W), in batches."""
    batch = max(1, int(model.spec.train.eval_batch_size))
    phase = model.method.phases()[-1]
    parts = []
    for start in range(0, images.shape[0], batch):
        x = model.augmenter.test(images[start:start + batch].to(model.device, non_blocking=True))
        with model.ctx.autocast():
            scores = model.method.predict(x)
        check_members(model.method, {"model": scores}, x.shape[0], len(model.class_names), phase)
        parts.append(as_probabilities(scores).float().cpu())
    if not parts:
        return torch.zeros(0, len(model.class_names))
    return torch.cat(parts)


# -- the target dataset -----------------------------------------------------------------------------
def open_target(config: Config, registry: Registry, name: str, data_root: str | None,
                sets: list[str]) -> tuple[Dataset, str]:
    """The dataset ``name`` (a plugin or configured instance) opened as a run opens it, and its plugin.

    ``sets`` are ``--set datasets.<name>.options.KEY=VALUE`` items (only dataset options: the
    model's training settings are the run's).
    """
    from nlbench.dataset import open_dataset
    from nlbench.options import build_options, identity_dict
    from nlbench.spec.config import parse_set
    from nlbench.spec.runspec import FrozenMap

    items = [parse_set(item) for item in sets]
    for key, _ in items:
        if not key.startswith("datasets."):
            raise UsageError(f"--set {key}: evaluate takes dataset options only (datasets.NAME.options.KEY=VALUE); "
                             f"the model's own settings are those of its run.")
    config = config.with_sets(items)
    if not name or not name.strip():
        raise UsageError("--dataset is empty; give the dataset to evaluate on (`nlbench datasets` lists them).")
    plugin = config.dataset_plugin(name, registry)
    cls = registry.dataset(plugin)
    options = build_options(cls.Options, config.dataset_options(name), f"datasets.{name}.options")
    if data_root is None and cls.needs_root:
        raise UsageError(f"dataset {name!r} reads files from disk: give their folder with --data-root PATH "
                         f"(nlbench never downloads data).")
    if data_root is not None and not data_root.strip():
        raise UsageError("--data-root is empty; give the dataset's folder.")
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    return open_dataset(cls, root, FrozenMap(identity_dict(options)), instance=name), plugin


def target_identity(dataset: Dataset, plugin: str, split: str) -> dict[str, Any]:
    """What identifies an evaluation target (:func:`nlbench.evaluations.target_key` hashes part of it)."""
    from nlbench.evaluations import target_key
    from nlbench.options import build_options, identity_dict

    options = identity_dict(dataset.options)
    try:
        defaults = identity_dict(build_options(type(dataset).Options, {}, "defaults"))
    except UsageError:  # a plugin with required options: every option is the user's choice
        defaults = {}
    root = str(dataset.root) if dataset.root is not None else None
    return {"dataset": dataset.instance, "plugin": plugin, "version": str(dataset.version), "options": options,
            "split": split, "key": target_key(dataset.instance, plugin, str(dataset.version), options, split, root),
            "changed_options": {k: v for k, v in options.items() if k not in defaults or defaults[k] != v},
            "fingerprint": dataset.fingerprint(), "root": root}


# -- classes ----------------------------------------------------------------------------------------
@dataclass
class ClassMatch:
    """How the target's classes become the model's: by name, by ``--map``, or left out."""

    model: tuple[str, ...]
    target: tuple[str, ...]
    #: Per target class index: the model class index its images count as, or -1 (left out).
    to_model: np.ndarray
    #: Target class -> model class, as given with --map.
    mapped: dict[str, str] = field(default_factory=dict)
    #: Target classes left out (--drop-unknown).
    dropped: list[str] = field(default_factory=list)
    #: Model classes no target class counts as: a prediction there is always wrong.
    model_only: list[str] = field(default_factory=list)


def parse_maps(items: Iterable[str]) -> dict[str, str]:
    """``--map TARGET=MODEL`` items as a dict (the class names as given)."""
    out: dict[str, str] = {}
    for item in items:
        target, sep, model = item.partition("=")
        if not sep or not target.strip() or not model.strip():
            raise UsageError(f"--map expects TARGET=MODEL (a class of the target dataset = a class of the model), "
                             f"e.g. --map contempt=disgust; got {item!r}.")
        if target.strip().lower() in {k.lower() for k in out}:
            raise UsageError(f"--map names the target class {target.strip()!r} twice; give each class once.")
        out[target.strip()] = model.strip()
    return out


def match_classes(model: tuple[str, ...], target: tuple[str, ...], maps: dict[str, str], drop_unknown: bool,
                  model_what: str = "the model", target_what: str = "the target dataset") -> ClassMatch:
    """Match ``target``'s classes to ``model``'s by name (case-insensitive), then ``maps``; see the module doc."""
    model_index = {name.lower(): i for i, name in enumerate(model)}
    target_index = {name.lower(): i for i, name in enumerate(target)}
    listing = (f"\n  classes of {model_what}: {', '.join(model)}\n  classes of {target_what}: {', '.join(target)}")
    for source, destination in maps.items():
        if source.lower() not in target_index:
            raise UsageError(f"--map {source}={destination}: {source!r} is not a class of {target_what}.{listing}")
        if destination.lower() not in model_index:
            raise UsageError(f"--map {source}={destination}: {destination!r} is not a class of {model_what}.{listing}")
    lowered = {k.lower(): v for k, v in maps.items()}
    to_model = np.full(len(target), -1, dtype=np.int64)
    unknown = []
    for i, name in enumerate(target):
        wanted = lowered.get(name.lower(), name)
        if wanted.lower() in model_index:
            to_model[i] = model_index[wanted.lower()]
        else:
            unknown.append(name)
    if unknown and not drop_unknown:
        raise UsageError(
            f"{target_what} has classes {model_what} does not know: {', '.join(unknown)}.{listing}\n"
            f"Say which model class each counts as with --map TARGET=MODEL (repeatable{_suggest(unknown, model)}), "
            f"or pass --drop-unknown to leave their images out (the count is reported).")
    used = set(to_model[to_model >= 0].tolist())
    return ClassMatch(model, target, to_model, {k: model[model_index[v.lower()]] for k, v in maps.items()},
                      unknown, [name for i, name in enumerate(model) if i not in used])


def _suggest(unknown: list[str], model: tuple[str, ...]) -> str:
    """``, e.g. --map happy=happiness`` where a usual synonym names a model class, else ``, e.g. ...``."""
    from nlbench.dataset import AFFECTNET_SYNONYMS

    by_index = {AFFECTNET_SYNONYMS.get(name.lower()): name for name in model}
    for name in unknown:
        index = AFFECTNET_SYNONYMS.get(name.lower())
        if index is not None and by_index.get(index):
            return f", e.g. --map {name}={by_index[index]}"
    return f", e.g. --map {unknown[0]}={model[0]}"


# -- evaluation ---------------------------------------------------------------------------------------
def evaluate_model(model: StoredModel, dataset: Dataset, plugin: str, split: str, match: ClassMatch,
                   cache_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``split`` of ``dataset``: the record :mod:`nlbench.evaluations` stores."""
    from nlbench import __version__
    from nlbench.data.cache import load_split
    from nlbench.dataset import SPLITS

    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    data = load_split(dataset, split, cache_dir)
    labels = np.asarray(data.table.labels, dtype=np.int64)
    mapped = match.to_model[labels]
    kept = np.flatnonzero(mapped >= 0)
    if kept.size == 0:
        raise DataError(f"no {split} image of {dataset.instance!r} is left to evaluate on: every one is of a class "
                        f"left out ({', '.join(match.dropped)}); map them with --map TARGET=MODEL instead.")
    images = data.images if kept.size == labels.size else data.images.index_select(0, torch.as_tensor(kept))
    probabilities = class_probabilities(model, images)
    confidence, predicted = probabilities.max(dim=1)
    truth = torch.as_tensor(mapped[kept])
    k = len(model.class_names)
    matrix = confusion(predicted, truth, k)
    correct = predicted == truth
    scores = {"accuracy": 100.0 * int(correct.sum()) / int(correct.numel()),
              **class_scores(matrix.astype(np.float64)),
              "ece": expected_calibration_error(confidence, correct)}
    dropped = {name: int((labels == match.target.index(name)).sum()) for name in match.dropped}
    outside = [model.class_names.index(name) for name in match.model_only]
    return {
        "kind": "nlbench evaluation", "format": 1, "nlbench": __version__,
        "run_id": model.run_id, "method": model.spec.method, "trained_on": model.spec.data.name,
        "target": target_identity(dataset, plugin, split),
        "split_size": int(labels.size), "samples": int(kept.size), "dropped_samples": int(labels.size - kept.size),
        "classes": {"model": list(model.class_names), "target": list(match.target), "map": match.mapped,
                    "dropped": dropped, "model_only": match.model_only},
        "predicted_outside": int(matrix[:, outside].sum()) if outside else 0,
        "scores": scores,
        "report": per_class_report(matrix, model.class_names),
        "preprocessing": {"image_size": int(model.spec.train.image_size), "storage_size": int(dataset.storage_size),
                          "mean": model.augmenter.mean.flatten().tolist(),
                          "std": model.augmenter.std.flatten().tolist()},
        "own_data": own_data(model.spec, dataset, plugin),
        "device": str(model.device), "evaluated": time.time(),
    }


def own_data(spec: RunSpec, dataset: Dataset, plugin: str) -> bool:
    """Whether ``dataset`` is the data the run trained and was tested on (same plugin, version, options)."""
    from nlbench.options import identity_dict

    return (plugin == spec.data.plugin_name and str(dataset.version) == str(spec.data.version)
            and identity_dict(dataset.options) == dict(spec.data.options))


# -- prediction on image files ------------------------------------------------------------------------
def image_files(folder: Path) -> tuple[list[Path], int]:
    """The image files under ``folder`` (recursively, sorted, hidden ones ignored) and how many other files."""
    found, other = [], 0
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(path)
        else:
            other += 1
    return found, other


def decode_files(paths: list[Path], size: int) -> tuple[torch.Tensor, list[str]]:
    """The images of ``paths`` as uint8 N x 3 x size x size (as the decode cache stores them) and the
    files that could not be read, each with why."""
    from PIL import Image

    from nlbench.data.cache import to_storage

    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)

    def work(i: int) -> str | None:
        try:
            with Image.open(paths[i]) as image:
                out[i] = to_storage(np.asarray(image.convert("RGB")), size)
            return None
        except Exception as err:  # not an image, truncated, unreadable: named, never a crash mid-way
            return f"{paths[i]}: {type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        failures = [problem for problem in pool.map(work, range(len(paths))) if problem]
    return torch.from_numpy(out), failures


def predict_files(model: StoredModel, paths: list[Path]) -> torch.Tensor:
    """N x K class probabilities of image files; every unreadable file is named in one DataError.

    Decoded and predicted in chunks, so a large folder is never held in memory at once.
    """
    chunk = max(1, int(model.spec.train.eval_batch_size)) * 4
    parts, failures = [], []
    for start in range(0, len(paths), chunk):
        images, bad = decode_files(paths[start:start + chunk], model.storage_size)
        failures += bad
        if not failures:  # after the first bad file only the rest's readability matters
            parts.append(class_probabilities(model, images))
    if failures:
        shown = "\n  ".join(failures[:5]) + (f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise DataError(f"{len(failures)} of {len(paths)} file(s) cannot be read as images:\n  {shown}\n"
                        f"Nothing was written. Remove them from the command (or the folder) and run it again.")
    return torch.cat(parts) if parts else torch.zeros(0, len(model.class_names))
