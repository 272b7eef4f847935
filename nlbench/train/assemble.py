"""The one assembly of a run: spec -> dataset, splits, noisy labels, context, method, augmenter, images.

The engine, :func:`nlbench.testing.check_method` and the throughput benchmark all build what they
train with through :func:`assemble` (or the steps it is made of, in this order), so what is tested
and measured is what is trained. Each step is a function of the spec and the steps before it:

1. :func:`nlbench.dataset.open_dataset` the dataset plugin, its layout checked;
2. :func:`load_splits` the train and test images, decoded once into the uint8 cache;
3. :func:`training_labels` the noisy labels (injected, seeded by the spec, or the dataset's own);
4. :func:`build_context` the context a method is built with (networks, optimisers, generators);
5. :func:`build_method` the method, built on that context;
6. :func:`build_augmenter` and :class:`nlbench.train.epoch.ImageCache` the batched augmentation and the
   image source on the training device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nlbench.context import Context, LabelStore, uses_amp, uses_channels_last
from nlbench.data.augment import Augmenter
from nlbench.data.cache import SplitData, load_split
from nlbench.data.noise import NoiseResult, dataset_noise, inject_noise
from nlbench.data.validation import training_subset, validation_split
from nlbench.dataset import open_dataset
from nlbench.environment import cpu_has_bf16
from nlbench.errors import DataError, NlbenchError, RunFailed, UsageError
from nlbench.landmarks import Scheme
from nlbench.method import Method
from nlbench.seeding import derive_seed
from nlbench.train.backbone import BackboneFactory
from nlbench.train.epoch import ImageCache, describe_method

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.dataset import Dataset
    from nlbench.progress import Reporter
    from nlbench.registry import Registry
    from nlbench.spec.runspec import RunSpec


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; an unavailable request is a usage error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto.")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UsageError(f"unknown device {requested!r}; use cpu, cuda or auto.")
    try:
        return torch.device(requested)
    except RuntimeError:
        raise UsageError(f"unknown device {requested!r}; use cpu, cuda, cuda:N or auto.") from None


def make_dataset(registry: Registry, spec: RunSpec) -> Dataset:
    """The dataset of a spec, its layout checked: the spec's plugin (not benchmark.toml's) under the spec's name."""
    return open_dataset(registry.dataset(spec.data.plugin_name), spec.data.root, spec.data.options,
                        instance=spec.data.name)


def load_splits(dataset: Dataset, spec: RunSpec) -> tuple[SplitData, SplitData]:
    """The train and test split of a spec's dataset, decoded once into the image cache."""
    cache = Path(spec.cache_dir).expanduser() if spec.cache_dir else None
    return load_split(dataset, "train", cache), load_split(dataset, "test", cache)


def training_labels(dataset: Dataset, train: SplitData, spec: RunSpec) -> NoiseResult:
    """The noisy label vector of the run, its realised rate and how it came about."""
    clean = train.table.labels
    if spec.noise.source == "dataset":
        return dataset_noise(train.table, dataset=spec.data.name, seed=spec.seed)
    if spec.noise.source == "file":
        from nlbench.data.noise_file import labels_from_file

        return labels_from_file(spec.noise.file, dataset, train.table, expected_sha256=spec.noise.file_sha256,
                                label_base=spec.noise.file_label_base)
    pair_order = None
    if dataset.to_affectnet is not None:
        pair_order = tuple(int(i) for i in np.argsort(dataset.to_affectnet))
    return inject_noise(clean, dataset.num_classes, spec.noise.rate, spec.noise.mode, dataset=spec.data.name,
                        seed=spec.seed, pair_order=pair_order, class_names=tuple(dataset.class_names),
                        features=lambda: instance_features(train.images, dataset.mean, dataset.std))


#: Side of the images whose pixels are the features of ``instance`` noise (Xia et al. used 32 x 32).
INSTANCE_FEATURE_SIDE = 32


def instance_features(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(N, 3 * 32 * 32) features of uint8 images for instance-dependent noise: resized, normalised per channel."""
    import torch.nn.functional as F

    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    rows = []
    for start in range(0, images.shape[0], 1024):
        chunk = images[start:start + 1024].to(torch.float32).div_(255.0)
        chunk = F.interpolate(chunk, size=(INSTANCE_FEATURE_SIDE, INSTANCE_FEATURE_SIDE), mode="area")
        rows.append(((chunk - mean_t) / std_t).flatten(1))
    if not rows:
        return np.zeros((0, 3 * INSTANCE_FEATURE_SIDE ** 2), dtype=np.float32)
    return torch.cat(rows).numpy()


def build_context(spec: RunSpec, dataset: Dataset, labels: LabelStore, device: torch.device) -> Context:
    """The context a method of this spec is built with."""
    settings = spec.train
    pipeline = settings.augmentation or dataset.augmentation
    channels_last = uses_channels_last(settings, device)
    return Context(
        device=device, num_classes=dataset.num_classes, class_names=tuple(dataset.class_names),
        epochs=settings.epochs, batch_size=settings.batch_size, train_size=int(labels.given.numel()),
        noise_rate=spec.noise.rate, seed=spec.seed, settings=settings,
        backbones=BackboneFactory(settings.backbone, dataset.num_classes, spec.seed, spec.pretrained_path),
        labels=labels, augmentation=pipeline,
        augmenters=lambda name: Augmenter(name, settings.image_size, dataset.mean, dataset.std, device, channels_last),
    )


def build_method(spec: RunSpec, registry: Registry, ctx: Context) -> Method:
    """The spec's method with its hyperparameters, built on ``ctx``."""
    cls = registry.method(spec.method)
    method = cls(spec.hp(cls.HParams))
    try:
        method.build(ctx)
    except (NlbenchError, KeyboardInterrupt):
        raise
    except (Exception, SystemExit) as err:  # the plugin's failure, named: never an "internal error"
        raise RunFailed(f"{describe_method(method)}: build raised {type(err).__name__}: {err}") from err
    return method


def build_augmenter(spec: RunSpec, dataset: Dataset, device: torch.device) -> Augmenter:
    """The batched augmentation of the run on its device (the setting, else the dataset's pipeline)."""
    settings = spec.train
    channels_last = uses_channels_last(settings, device)
    return Augmenter(settings.augmentation or dataset.augmentation, settings.image_size, dataset.mean,
                     dataset.std, device, channels_last)


def sampling_weights(noisy: np.ndarray, num_classes: int, spec: RunSpec) -> torch.Tensor | None:
    """Per-sample weights of class-balanced oversampling by the observed labels (None: plain shuffling)."""
    if not spec.train.balanced_sampling:
        return None
    counts = np.bincount(noisy, minlength=num_classes).astype(np.float64)
    return torch.as_tensor(1.0 / counts[noisy], dtype=torch.float64)


def trained_indices(noisy: np.ndarray, spec: RunSpec) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the training split of the samples trained on and of the held-out validation ones."""
    # Held out after the noise is drawn, so the stored noisy labels do not depend on the split.
    fit, held = validation_split(noisy, spec.train.val_fraction, spec.seed, spec.data.name)
    return training_subset(fit, spec.train.train_size, spec.seed, spec.data.name), held


@dataclass
class Assembly:
    """Everything one run trains and evaluates with, built from its spec by :func:`assemble`."""

    spec: RunSpec
    device: torch.device
    dataset: Dataset
    train: SplitData
    test: SplitData
    #: The noisy training labels given to the method, and their realised noise rate.
    noisy: np.ndarray
    realised_rate: float
    #: The noise draw itself (labels, rate, generator seed, note), for the result.
    noise: NoiseResult
    labels: LabelStore
    #: Clean training labels on the device: diagnostics only, never given to ``train_step``.
    clean: torch.Tensor
    test_labels: torch.Tensor
    ctx: Context
    method: Method
    augmenter: Augmenter
    train_images: ImageCache
    test_images: torch.Tensor
    weights: torch.Tensor | None
    #: The held-out validation images, their noisy labels (the selection criterion) and their
    #: clean labels (diagnostics only); empty when ``val_fraction`` is 0.
    val_images: torch.Tensor
    val_labels: torch.Tensor
    val_clean: torch.Tensor
    #: Indices into the training split of the images trained on and of those held out.
    train_index: np.ndarray
    val_index: np.ndarray


def assemble(spec: RunSpec, registry: Registry, *, device: torch.device | None = None,
             dataset: Dataset | None = None, splits: tuple[SplitData, SplitData] | None = None,
             reporter: Reporter | None = None) -> Assembly:
    """Build a run from its spec (module docstring); ``dataset``/``splits`` replace steps 1-2."""
    device = device if device is not None else resolve_device(spec.device)
    dataset = dataset if dataset is not None else make_dataset(registry, spec)
    if splits is None:
        if reporter is not None:
            reporter.status(f"loading {spec.data.name} (decoded once, cached as uint8)")
        splits = load_splits(dataset, spec)
    train, test = splits
    skipped = len(train.table.problems) + len(test.table.problems)
    if skipped and reporter is not None:
        first = (train.table.problems or test.table.problems)[0]
        reporter.message(
            f"{skipped} rows of {spec.data.name} were skipped or look odd (the first: {first}); "
            f"`nlbench prepare --dataset {spec.data.name} --data-root {spec.data.root}` lists them all"
        )
    if reporter is not None and device.type == "cpu" and uses_amp(spec.train, device) and cpu_has_bf16() is False:
        reporter.message("train.cpu_amp is on, but this CPU has no bf16 instructions (avx512_bf16, amx_bf16): "
                         "bf16 is emulated and trains slower than fp32 here; --set train.cpu_amp=false trains in "
                         "fp32 (other numbers, another run id)")
    noise = training_labels(dataset, train, spec)
    noisy, realised = noise.labels, noise.realised_rate
    fit, held = trained_indices(noisy, spec)
    select = torch.as_tensor(fit)
    train_images = train.images if fit.size == len(train) else train.images.index_select(0, select)
    if device.type == "cuda":
        # Shapes are fixed (drop_last), so cuDNN's autotuning pays for itself after a few steps.
        torch.backends.cudnn.benchmark = True
    # The global generator is reseeded before anything is built, so nothing a caller did before
    # (another run in the same process) changes this one.
    torch.manual_seed(derive_seed(spec.seed, "global"))
    labels = LabelStore(noisy[fit], device)
    ctx = build_context(spec, dataset, labels, device)
    method = build_method(spec, registry, ctx)
    held_index = torch.as_tensor(held)
    train_cache = ImageCache(ImageCache.place(train_images, device, spec.train), device)
    if method.needs_landmarks:
        train_cache.scheme, train_cache.landmarks = training_landmarks(dataset, len(train), fit, device, reporter)
    ctx.images, ctx.modules_of = train_cache, method.modules  # ctx.fetch and ctx.scan
    return Assembly(
        spec=spec, device=device, dataset=dataset, train=train, test=test, noisy=noisy, realised_rate=realised, noise=noise,
        labels=labels, clean=torch.as_tensor(train.table.labels[fit], device=device),
        test_labels=torch.as_tensor(test.table.labels, device=device), ctx=ctx, method=method,
        augmenter=build_augmenter(spec, dataset, device),
        train_images=train_cache,
        test_images=ImageCache.place(test.images, device, spec.train),
        weights=sampling_weights(noisy[fit], dataset.num_classes, spec),
        val_images=ImageCache.place(train.images.index_select(0, held_index), device, spec.train),
        val_labels=torch.as_tensor(noisy[held], device=device),
        val_clean=torch.as_tensor(train.table.labels[held], device=device),
        train_index=fit, val_index=held,
    )


def training_landmarks(dataset: Dataset, size: int, fit: np.ndarray, device: torch.device,
                       reporter: Reporter | None = None) -> tuple[Scheme, torch.Tensor]:
    """The scheme and the landmarks (on the device) of the training images trained on, checked;
    the reporter hears how many faces have none (they train without a landmark target)."""
    from nlbench.landmarks import SCHEMES

    scheme = SCHEMES.get(dataset.landmark_scheme or "")
    if scheme is None:
        raise DataError(f"dataset {dataset.instance!r} has no facial landmarks of a known scheme "
                        f"({dataset.landmark_scheme!r}; known: {', '.join(SCHEMES)}), and the method trains on them.")
    points = dataset.read_landmarks("train")
    expected = (size, len(scheme.points), 2)
    if points is None or tuple(np.shape(points)) != expected:
        raise DataError(f"dataset {dataset.instance!r}: its {scheme.name} landmarks should be an array of shape "
                        f"{expected}, got {None if points is None else tuple(np.shape(points))}.")
    points = np.asarray(points, dtype=np.float32)[fit]
    without = int(np.isnan(points).all(axis=(1, 2)).sum())
    if without and reporter is not None:
        reporter.message(f"{without} of {len(points)} training faces of {dataset.instance} have no {scheme.name} "
                         f"landmarks and train without a landmark target")
    return scheme, torch.as_tensor(points, device=device)


def with_settings(spec: RunSpec, **changes: Any) -> RunSpec:
    """A copy of ``spec`` with training settings changed (checked like any other settings)."""
    from nlbench.options import build_options
    from nlbench.settings import TrainSettings

    merged = {**dataclasses.asdict(spec.train), **changes}
    return dataclasses.replace(spec, train=build_options(TrainSettings, merged, "train"))
