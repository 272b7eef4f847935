"""Conformance check for method plugins: train through the real engine, predict, round-trip the state.

Plugin authors call it from their own tests::

    from nlbench.testing import check_method

    def test_my_method_conforms(tmp_path):
        check_method(MyMethod, tmp_path=tmp_path)

It trains the method for two epochs on a tiny synthetic FER set (140 training and 70 test images
at 16 px, batch 32) on the CPU through :class:`nlbench.train.engine.Engine`, then rebuilds the method
through the same assembly (:func:`nlbench.train.assemble.assemble`) and checks that

- every training phase ran and stored finite losses;
- the checkpoint's method state reproduces the engine's last test accuracies;
- ``predict`` gives B x num_classes finite scores and ``predict_members`` holds ``model``
  (and only B x num_classes finite scores);
- ``state_dict`` survives ``torch.save``/``torch.load`` into a freshly built instance with
  identical predictions;
- ``train_step`` returns a finite 0-dim ``loss``, B x C ``logits``, a B boolean ``selected`` and
  B finite floats ``sample_score`` when it returns them, and 0-dim tensors for every other key.

It prints one line, "check_method(NAME): 8 checks passed: ..." (:data:`CHECKS` names them). A
failed check raises :class:`ConformanceError` (an ``AssertionError``) naming the check and saying
what is wrong.

For unit tests of a ``train_step`` on hand-made batches, :func:`stub_context` gives a context
whose networks are tiny seeded ``nn.Linear`` layers (or any factory the test supplies).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import Tensor, nn

from nlbench.context import Context, LabelStore
from nlbench.data.augment import Augmenter
from nlbench.landmarks import to_input
from nlbench.method import Batch, Method, Phase
from nlbench.plugins import get_registry
from nlbench.progress import Reporter
from nlbench.registry import Entry, PluginInfo, Registry
from nlbench.safe_load import load_tensors
from nlbench.settings import TrainSettings
from nlbench.spec.config import Config
from nlbench.spec.resolve import RunRequest, resolve_spec
from nlbench.spec.runspec import RunSpec
from nlbench.train.assemble import Assembly, assemble
from nlbench.train.engine import Engine
from nlbench.train.epoch import ImageCache
from nlbench.train.evaluate import accuracies, predict_split

#: The tiny run every method is checked on.
TINY_DATASET = {"train_size": 140, "test_size": 70, "size": 16}
TINY_TRAIN = {"image_size": 16, "batch_size": 32, "eval_batch_size": 70, "last_k": 1}


def tiny_sets(dataset: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> list[str]:
    """The tiny run as ``--set`` items (synthfer options, then ``[train]`` settings).

    ``dataset`` and ``train`` change :data:`TINY_DATASET` and :data:`TINY_TRAIN`; a value of None
    leaves that setting at its default. A plugin's own CLI tests can train the same tiny run.
    """
    options = {k: v for k, v in {**TINY_DATASET, **(dataset or {})}.items() if v is not None}
    settings = {k: v for k, v in {**TINY_TRAIN, **(train or {})}.items() if v is not None}
    return ([f"datasets.synthfer.options.{k}={v}" for k, v in options.items()]
            + [f"train.{k}={v}" for k, v in settings.items()])


class ConformanceError(AssertionError):
    """A method plugin broke the method contract."""


@dataclass
class ConformanceReport:
    """What the check ran: the run's folder, its result.json content, its per-epoch records and the
    checks passed. Shown (printed, or by pytest) as one line, not as the whole result."""

    run_path: Path
    result: dict[str, Any] = field(repr=False)
    history: list[dict[str, Any]] = field(repr=False)
    #: The names of the checks passed, in order (see CHECKS).
    checks: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        method = self.result.get("method", "?")
        return f"check_method({method}): {len(self.checks)} checks passed: " + "; ".join(self.checks)

    def __repr__(self) -> str:
        return f"ConformanceReport({len(self.checks)} checks passed, run in {self.run_path})"


#: What check_method checks, in order: the names it reports, and names in a failure's message.
CHECKS = (
    "a Method with a name and an HParams dataclass",
    "trains through the engine",
    "the spec gives the same noisy labels again",
    "every phase ran its epochs with finite losses",
    "the checkpoint reproduces the last test accuracies",
    "predict and predict_members give B x C finite scores",
    "state_dict survives save and load with identical predictions",
    "train_step returns the documented outputs",
)


class _Checks:
    """The checks passed so far; a failed one raises ConformanceError naming it."""

    def __init__(self) -> None:
        self.passed: list[str] = []

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        assert name in CHECKS, name
        try:
            yield
        except ConformanceError as err:
            raise ConformanceError(f"check {len(self.passed) + 1} of {len(CHECKS)} ({name}) failed: {err}") from None
        self.passed.append(name)


def check_method(method_cls: type[Method], hparams: Any = None, tmp_path: Path | str | None = None,
                 device: str = "cpu", epochs: int = 2, noise: float = 0.2, seed: int = 0,
                 backbone: str = "resnet18", train: dict[str, Any] | None = None,
                 quiet: bool = False) -> ConformanceReport:
    """Train ``method_cls`` briefly through the engine and check the method contract (module docstring).

    ``hparams`` is an instance of ``method_cls.HParams`` or a dict of overrides (None: defaults);
    ``tmp_path`` holds the run and the image cache (None: a temporary folder, removed afterwards);
    ``backbone`` is the timm model ``ctx.backbone()`` builds (a smaller one, e.g. timm's
    ``test_resnet``, makes the check faster and proves the method does not assume ResNet-18 sizes);
    ``train`` holds further ``[train]`` settings of the tiny run (e.g. ``{"augmentation": "eac"}``).
    Prints one line, "check_method(NAME): N checks passed: ...", unless ``quiet``.
    """
    if tmp_path is None:
        with tempfile.TemporaryDirectory(prefix="nlbench-conformance-") as folder:
            report = _check(method_cls, hparams, Path(folder), device, epochs, noise, seed, backbone, train or {})
    else:
        report = _check(method_cls, hparams, Path(tmp_path), device, epochs, noise, seed, backbone, train or {})
    if not quiet:
        print(report)
    return report


def _check(method_cls: type[Method], hparams: Any, root: Path, device_name: str, epochs: int,
           noise: float, seed: int, backbone: str, train: dict[str, Any]) -> ConformanceReport:
    checks = _Checks()
    with checks.check("a Method with a name and an HParams dataclass"):
        _expect(isinstance(method_cls, type) and issubclass(method_cls, Method),
                f"{method_cls!r} is not a nlbench.Method subclass")
        name = getattr(method_cls, "name", None)
        _expect(isinstance(name, str) and name.isidentifier(),
                f"{method_cls.__name__}.name must be an identifier string")
        _expect(dataclasses.is_dataclass(method_cls.HParams), f"{name}: HParams must be a dataclass")
    registry = _registry_with(method_cls)
    if hparams is None:
        overrides: dict[str, Any] = {}
    elif dataclasses.is_dataclass(hparams) and not isinstance(hparams, type):
        overrides = dataclasses.asdict(hparams)
    else:
        overrides = dict(hparams)
    config = Config(methods={name: overrides}, datasets={"synthfer": {"options": dict(TINY_DATASET)}})
    extra = {k: f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v
             for k, v in train.items()}
    sets = [f"train.{key}={value}" for key, value in {**TINY_TRAIN, "backbone": f'"{backbone}"', **extra}.items()]
    request = RunRequest(method=name, dataset="synthfer", noise=noise, seed=seed, epochs=epochs, device=device_name,
                         cache_dir=str(root / "cache"), sets=sets)
    spec = resolve_spec(request, config, registry)
    device = torch.device(device_name)
    with checks.check("trains through the engine"):
        engine = Engine(spec, registry, root / "runs", Reporter(Console(quiet=True)), device=device)
        outcome = engine.execute(force=True, keep_checkpoint=True)
    run = outcome.run_dir
    state = run.load_checkpoint()
    history = state["history"]

    fresh_run = _fresh(spec, registry, device)
    method = fresh_run.method
    with checks.check("the spec gives the same noisy labels again"):
        _expect(np.array_equal(fresh_run.noisy, np.load(run.file("noisy_labels.npy"))),
                f"{name}: assembling the spec again gives other noisy labels than the run trained on")
    phases = method.phases()
    with checks.check("every phase ran its epochs with finite losses"):
        _expect(len(phases) >= 1, f"{name}: phases() returned no phase")
        for phase in phases:
            done = [r for r in history if r["phase"] == phase.name]
            _expect(len(done) == phase.epochs,
                    f"{name}: phase {phase.name!r} stored {len(done)} of {phase.epochs} epochs")
        _expect(all(np.isfinite(r["train"]["loss"]) for r in history), f"{name}: a stored epoch loss is not finite")

    with checks.check("the checkpoint reproduces the last test accuracies"):
        method.load_state_dict(state["method"])
        method.ctx.labels.load_state_dict(state["labels"])
        last = phases[-1]
        labels = fresh_run.test_labels
        reloaded = accuracies(predict_split(method, last, fresh_run.test_images, fresh_run.augmenter, method.ctx,
                                            spec.train.eval_batch_size), labels)
        # Exact on the CPU; on accelerators kernels may differ in the last bit, so one test sample may flip.
        slack = 0.0 if device.type == "cpu" else 100.0 / len(labels) + 1e-6
        measured = history[-1]["test"]
        _expect(set(reloaded) == set(measured) and all(abs(reloaded[k] - measured[k]) <= slack for k in measured),
                f"{name}: the checkpointed state gives test accuracies {reloaded}, the engine measured "
                f"{measured}: state_dict misses something predictions depend on")

    dataset, test, augmenter = fresh_run.dataset, fresh_run.test, fresh_run.augmenter
    x = augmenter.test(test.images[:32].to(device))
    classes = dataset.num_classes
    with checks.check("predict and predict_members give B x C finite scores"):
        first = _predictions(method, x, last, classes, name)

    with checks.check("state_dict survives save and load with identical predictions"):
        path = root / "state.pt"
        torch.save(method.state_dict(), path)
        fresh = _fresh(spec, registry, device).method
        fresh.load_state_dict(load_tensors(path))  # what resuming loads
        second = _predictions(fresh, x, last, classes, name)
        for member, scores in first.items():
            same = torch.equal(scores, second[member]) if device.type == "cpu" else torch.allclose(
                scores, second[member], rtol=1e-3, atol=1e-3)
            _expect(same, f"{name}: member {member!r} predicts differently after state_dict -> load_state_dict")

    with checks.check("train_step returns the documented outputs"):  # one more step on the fresh instance
        _check_train_step(fresh, last, fresh_run.train_images, augmenter, spec.train.batch_size, device, classes,
                          name)
    return ConformanceReport(run.path, outcome.result, history, checks.passed)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


def _registry_with(method_cls: type[Method]) -> Registry:
    """The loaded plugins with ``method_cls`` under its name (no observer hooks: the check is hermetic)."""
    base = get_registry()
    methods = dict(base.methods)
    entry = methods.get(method_cls.name)
    if entry is None or entry.cls is not method_cls:
        info = PluginInfo(f"conformance:{method_cls.__name__}", "test", method_cls.__module__, "")
        methods[method_cls.name] = Entry(method_cls.name, method_cls, info)
    return Registry(methods=methods, datasets=dict(base.datasets), plugins=list(base.plugins), manager=None)


def _fresh(spec: RunSpec, registry: Registry, device: torch.device) -> Assembly:
    """The run assembled again from its spec, as the engine assembles it (a freshly built method)."""
    return assemble(spec, registry, device=device)


@torch.no_grad()
def _predictions(method: Method, x: Tensor, phase: Phase, classes: int, name: str) -> dict[str, Tensor]:
    """predict and predict_members in eval mode, checked for shape and finiteness."""
    for module in method.modules():
        module.eval()
    with method.ctx.autocast():
        scores = {"predict()": method.predict(x)}
        members = method.predict_members(x, phase)
    _expect(isinstance(members, dict) and "model" in members,
            f"{name}: predict_members must return a dict holding 'model' (the deployable model)")
    scores.update(members)
    for member, value in scores.items():
        _expect(isinstance(value, Tensor) and tuple(value.shape) == (x.shape[0], classes),
                f"{name}: {member} must be a {x.shape[0]} x {classes} tensor, got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
        _expect(bool(torch.isfinite(value.float()).all()), f"{name}: {member} holds non-finite values")
    return {k: v.float().cpu() for k, v in scores.items()}


def _check_train_step(method: Method, phase: Phase, source: ImageCache, augmenter: Augmenter, batch_size: int,
                      device: torch.device, classes: int, name: str) -> None:
    """Run one train_step and check its outputs against the contract of nlbench.Method."""
    ctx = method.ctx
    index = torch.arange(batch_size, device=device)
    with ctx.at(phase.name, 0):
        method.start_phase(phase)
        method.on_epoch_start(phase, 0)
        method.train_mode(phase)
        raw = source.get(0, index)
        x, geometry = augmenter.train_geometry(raw, ctx.generator("augment"))
        landmarks = flipped = None
        if method.needs_landmarks and source.landmarks is not None and source.scheme is not None:
            landmarks = to_input(source.landmarks[index], geometry, augmenter.size, source.scheme)
            flipped = geometry.flip
        y = ctx.labels.current[index]
        with ctx.autocast():
            out = method.train_step(Batch(x, y, index, raw if method.needs_raw else None, landmarks=landmarks,
                                          flipped=flipped), phase, 0)
        method.on_epoch_end(phase, 0)
    n = int(index.numel())
    _expect(isinstance(out, dict) and "loss" in out, f"{name}: train_step must return a dict with 'loss'")
    for key, value in out.items():
        _expect(isinstance(value, Tensor), f"{name}: train_step output {key!r} must be a tensor (kept on the device)")
        _expect(value.device.type == device.type, f"{name}: train_step output {key!r} is on {value.device}, not {device}")
        if key == "logits":
            _expect(tuple(value.shape) == (n, classes), f"{name}: 'logits' must be {n} x {classes}")
        elif key == "selected":
            _expect(value.dtype == torch.bool and tuple(value.shape) == (n,), f"{name}: 'selected' must be a bool mask of {n}")
        elif key == "sample_score":
            _expect(tuple(value.shape) == (n,) and value.is_floating_point(),
                    f"{name}: 'sample_score' must be {n} floats, one per sample")
            _expect(bool(torch.isfinite(value).all()), f"{name}: 'sample_score' holds non-finite values")
        else:
            _expect(value.numel() == 1, f"{name}: train_step output {key!r} must be a scalar tensor")
    _expect(bool(torch.isfinite(out["loss"].float()).all()), f"{name}: train_step returned a non-finite loss")
    _expect(not out["loss"].requires_grad, f"{name}: return loss.detach(), not the graph")



class LinearNetworks:
    """Network factory for unit tests: the k-th call gives a Linear(in_features, C) seeded by (seed, k)."""

    def __init__(self, in_features: int, num_classes: int, seed: int = 0) -> None:
        self.in_features = in_features
        self.num_classes = num_classes
        self.seed = seed
        self.calls = 0

    def __call__(self, num_classes: int | None = None) -> nn.Module:
        """A new, deterministically initialised linear "network"."""
        self.calls += 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + self.calls)
            return nn.Linear(self.in_features, num_classes or self.num_classes)


def stub_context(num_classes: int = 3, labels: Any = None, *, epochs: int = 10, batch_size: int = 8,
                 noise_rate: float = 0.2, seed: int = 0, in_features: int = 4,
                 networks: Callable[..., nn.Module] | None = None, device: str = "cpu") -> Context:
    """A Context for unit tests, without data or engine: ``ctx.backbone()`` calls ``networks``.

    ``labels`` (default: 16 zeros) are the stored noisy labels; ``networks`` defaults to
    :class:`LinearNetworks`, so batches are ``B x in_features`` feature vectors.
    """
    given = np.zeros(16, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, amp=False, channels_last=False, compile=False)
    return Context(
        device=torch.device(device), num_classes=num_classes,
        class_names=tuple(f"class{i}" for i in range(num_classes)), epochs=epochs, batch_size=batch_size,
        train_size=int(given.shape[0]), noise_rate=noise_rate, seed=seed, settings=settings,
        backbones=networks or LinearNetworks(in_features, num_classes, seed),  # type: ignore[arg-type]
        labels=LabelStore(given, torch.device(device)),
    )
