"""What the engine hands a method: device, sizes, seeded generators and shared-pipeline helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nlbench.seeding import derive_seed
from nlbench.settings import TrainSettings

__all__ = ["Context", "LabelStore", "RegisteredOptimizer", "derive_seed"]


class LabelStore:
    """The training labels a method sees, on the device; relabelling methods change them here.

    The injected noisy labels are kept untouched as ``given``; ``current`` starts as a copy and is
    changed only through :meth:`relabel`, which counts every change for the diagnostics.
    """

    def __init__(self, given: np.ndarray, device: torch.device) -> None:
        self.given = torch.as_tensor(given, dtype=torch.long, device=device)
        self.current = self.given.clone()
        self.changes = torch.zeros((), dtype=torch.long, device=device)

    def relabel(self, index: torch.Tensor, labels: torch.Tensor) -> None:
        """Set the labels of the samples at ``index`` (dataset indices) to ``labels``."""
        labels = labels.to(self.current.dtype)
        self.changes += (self.current[index] != labels).sum()
        self.current[index] = labels

    def state_dict(self) -> dict[str, Any]:
        """The current labels and change count, for checkpoints."""
        return {"current": self.current.cpu(), "changes": self.changes.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.current.copy_(state["current"].to(self.current.device))
        self.changes.copy_(state["changes"].to(self.changes.device))


def last_occurrences(index: torch.Tensor) -> torch.Tensor:
    """Positions in ``index`` of the last occurrence of each distinct value (a batch drawn with
    replacement repeats samples; "the last wins" makes an indexed write deterministic on any device)."""
    order = torch.argsort(index, stable=True)
    ordered = index[order]
    last = torch.ones_like(ordered, dtype=torch.bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    return order[last]


class SampleState:
    """Per-sample state of a method (N x ``shape``, on the device) that checkpoints save and a
    resumed run restores bit for bit: ELR's targets, a loss history. Made by ``ctx.sample_state``;
    a method keeps it as an attribute, which :meth:`nlbench.Method.state_dict` saves."""

    def __init__(self, size: int, shape: tuple[int, ...], dtype: torch.dtype, fill: float,
                 device: torch.device) -> None:
        self.data = torch.full((size, *shape), fill, dtype=dtype, device=device)

    def update(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Set the rows at ``index`` (training indices) to ``values``; a repeated index takes the
        values of its last occurrence."""
        keep = last_occurrences(index)
        self.data[index[keep]] = values[keep].to(self.data.dtype)

    @property
    def megabytes(self) -> float:
        return self.data.numel() * self.data.element_size() / 2**20

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        data = state["data"]
        if tuple(data.shape) != tuple(self.data.shape):
            raise ValueError(f"saved per-sample state has shape {tuple(data.shape)}, this run {tuple(self.data.shape)}")
        self.data.copy_(data.to(self.data.device))


def _bf16_device(settings: TrainSettings, device: torch.device) -> bool:
    """Whether the device takes the bf16 path at all: CUDA always, the CPU with ``cpu_amp``."""
    return device.type == "cuda" or (device.type == "cpu" and settings.cpu_amp)


def uses_amp(settings: TrainSettings, device: torch.device) -> bool:
    """Whether a run with these settings on this device computes under bf16 autocast."""
    return settings.amp and _bf16_device(settings, device)


def uses_channels_last(settings: TrainSettings, device: torch.device) -> bool:
    """Whether networks and batches of a run use the channels_last layout (CUDA; CPU bf16)."""
    return settings.channels_last and _bf16_device(settings, device)


@dataclass
class RegisteredOptimizer:
    """An optimiser created through the context, with the phase whose epochs set its lr."""

    optimizer: torch.optim.Optimizer
    phase: str
    #: Step decay: lr x 0.1 at each of these epochs (0-based) instead of lr_decay^epoch.
    milestones: tuple[int, ...] | None = None


@dataclass
class Context:
    """The run as a method sees it (see :class:`nlbench.Method`)."""

    device: torch.device
    num_classes: int
    class_names: tuple[str, ...]
    epochs: int
    batch_size: int
    train_size: int
    noise_rate: float
    seed: int
    settings: TrainSettings
    #: Builds a new network per call (a :class:`nlbench.train.backbone.BackboneFactory` in runs;
    #: tests may pass any callable).
    backbones: Callable[..., nn.Module]
    labels: LabelStore
    phase: str = "train"
    epoch: int = 0
    optimizers: list[RegisteredOptimizer] = field(default_factory=list)
    #: The run's resolved training augmentation pipeline (the setting, else the dataset's).
    augmentation: str = "none"
    #: Builds the run's augmenter for a named pipeline (size, normalisation, layout of the run);
    #: set by the assembly, used by :meth:`augment`.
    augmenters: Callable[[str], Any] | None = None
    #: The uint8 training images by training index (set by the assembly: the run's image source,
    #: or a plain N x 3 x H x W tensor in tests), for :meth:`fetch` and :meth:`scan`.
    images: Any = None
    #: The method's networks (set by the assembly: ``method.modules``), put in eval mode by :meth:`scan`.
    modules_of: Callable[[], list[nn.Module]] | None = None
    _augmenter_cache: dict[str, Any] = field(default_factory=dict, repr=False)
    #: The per-sample states made by :meth:`sample_state`, by name.
    sample_states: dict[str, SampleState] = field(default_factory=dict, repr=False)
    #: Per-sample correctness (N bools) of the last scan that returned ``logits``, for the engine's
    #: ``scan_acc_clean``/``scan_acc_noisy``; taken (and cleared) by the engine at the epoch's end.
    scan_correct: torch.Tensor | None = field(default=None, repr=False)
    #: Work of this epoch's scans (image-passes: 1/3 per image and network), taken by the engine.
    scan_work: float = field(default=0.0, repr=False)

    @property
    def use_amp(self) -> bool:
        """Whether forward passes run under bf16 autocast (CUDA; the CPU with ``cpu_amp``)."""
        return uses_amp(self.settings, self.device)

    def backbone(self, num_classes: int | None = None) -> nn.Module:
        """A new ResNet-18 on the device; each call of a run gets its own seeded initialisation."""
        model = self.backbones(num_classes).to(self.device)
        if uses_channels_last(self.settings, self.device):
            model = model.to(memory_format=torch.channels_last)
        if self.settings.compile:
            model.compile()  # in place: state_dict keys stay the plain ones
        return model

    def compile(self, module: nn.Module) -> nn.Module:
        """``module`` compiled in place when the run sets ``compile`` (for a method's own wrapper,
        whose ``forward`` is what runs: ``ctx.backbone()`` compiles only the timm ``forward``)."""
        if self.settings.compile:
            module.compile()
        return module

    def augment(self, images: torch.Tensor, pipeline: str, gen: torch.Generator) -> torch.Tensor:
        """Augment a uint8 batch (``batch.raw``) with a named pipeline at the run's size and normalisation.

        Make ``gen`` once per epoch (``ctx.generator(purpose)`` in ``on_epoch_start``): a fresh
        generator per step would repeat the same draws every step.
        """
        if self.augmenters is None:
            raise RuntimeError("this context has no augmenter (it was not built by the assembly)")
        if pipeline not in self._augmenter_cache:
            self._augmenter_cache[pipeline] = self.augmenters(pipeline)
        return self._augmenter_cache[pipeline].train(images, gen)

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        """The uint8 training images (n x 3 x H x W, on the device) of training indices ``index``:
        the source ``batch.raw`` comes from, for extra batches a method picks itself (``ctx.augment``
        makes their views)."""
        if self.images is None:
            raise RuntimeError("this context has no training images (it was not built by the assembly)")
        if isinstance(self.images, torch.Tensor):
            return self.images.index_select(0, index.to(self.images.device)).to(self.device)
        return self.images.get(0, index.to(self.device))

    def scan(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
             pipeline: str = "none", batch_size: int | None = None,
             networks: int | None = None) -> dict[str, torch.Tensor]:
        """One pass over every training sample, in index order: ``fn(x, index, labels)`` per batch.

        Batches of ``batch_size`` (None: ``eval_batch_size``) with the test transform (or the named
        augmentation ``pipeline``, drawn from ``ctx.generator("scan")``), under ``no_grad`` and the
        run's autocast, with the method's networks in eval mode for the call (their modes restored
        after); ``labels`` are the current training labels. ``fn`` returns per-sample tensors
        (B x ...); the result holds each concatenated to N x ... in index order. When ``fn`` returns
        ``logits`` (those of the deployable network), the engine stores the epoch's training
        accuracy on them, for the clean and the noisy samples (``scan_acc_clean``, ``scan_acc_noisy``).
        Its work, 1/3 per image and network forward (``networks``, None: the method's networks), counts
        in the epoch's ``scan_work``.
        """
        if self.augmenters is None or self.images is None:
            raise RuntimeError("this context has no training images or augmenter (it was not built by the assembly)")
        if pipeline not in self._augmenter_cache:
            self._augmenter_cache[pipeline] = self.augmenters(pipeline)
        augmenter = self._augmenter_cache[pipeline]
        gen = self.generator("scan") if pipeline != "none" else None
        size = batch_size or self.settings.eval_batch_size
        tops = self.modules_of() if self.modules_of else []
        modes = [(m, m.training) for top in tops for m in top.modules()]
        parts: dict[str, list[torch.Tensor]] = {}
        try:
            for module, _ in modes:
                module.training = False
            with torch.no_grad():
                for start in range(0, self.train_size, size):
                    index = torch.arange(start, min(start + size, self.train_size), device=self.device)
                    raw = self.fetch(index)
                    x = augmenter.test(raw) if gen is None else augmenter.train(raw, gen)
                    with self.autocast():
                        out = fn(x, index, self.labels.current[index])
                    for key, value in out.items():
                        parts.setdefault(key, []).append(value.detach())
        finally:
            for module, mode in modes:
                module.training = mode
        self.scan_work += (len(tops) if networks is None else networks) * self.train_size / 3
        result = {key: torch.cat(values) for key, values in parts.items()}
        if "logits" in result:
            self.scan_correct = result["logits"].argmax(dim=1) == self.labels.current
        return result

    def optimizer(
        self, networks: Sequence[nn.Module], phase: str = "train", classifier_lr: float | None = None,
        kind: str = "adam", lr: float | None = None, weight_decay: float | None = None,
        milestones: Sequence[int] | None = None,
    ) -> torch.optim.Optimizer:
        """An optimiser over ``networks`` with the shared pipeline's groups: backbone lr and classifier lr.

        ``kind`` is "adam" (the shared pipeline) or "adamax" (CCT's distillation script); ``lr``
        replaces both group lrs, ``weight_decay`` the pipeline's. By default the lr of every group
        is multiplied by ``lr_decay`` once per epoch of ``phase`` (lr(e) = lr(0) * decay^e); with
        ``milestones`` it is multiplied by 0.1 at each listed epoch instead (MultiStepLR). The
        engine applies the schedule at the start of every epoch.
        """
        groups = []
        for net in networks:
            head = net.get_classifier() if hasattr(net, "get_classifier") else None
            head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
            backbone = [p for p in net.parameters() if id(p) not in head_ids and p.requires_grad]
            classifier = [p for p in net.parameters() if id(p) in head_ids and p.requires_grad]
            if backbone:
                groups.append({"params": backbone, "lr": lr or self.settings.backbone_lr})
            if classifier:
                groups.append({"params": classifier, "lr": lr or classifier_lr or self.settings.classifier_lr})
        for group in groups:
            group["initial_lr"] = group["lr"]
        decay = self.settings.weight_decay if weight_decay is None else weight_decay
        # Fused on CUDA always; on the CPU unless turned off (torch's default there is a Python loop
        # over parameters, the slowest of its three Adam kernels).
        fused = self.device.type == "cuda" or (self.device.type == "cpu" and self.settings.fused_adam)
        if kind == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(groups, weight_decay=decay, fused=fused or None)
        elif kind == "adamax":
            opt = torch.optim.Adamax(groups, betas=(0.9, 0.999), eps=1e-8, weight_decay=decay)
        else:
            raise ValueError(f"unknown optimiser {kind!r}; choose adam or adamax")
        self.optimizers.append(RegisteredOptimizer(opt, phase, tuple(milestones) if milestones else None))
        return opt

    def lr_factor(self, registered: RegisteredOptimizer, epoch: int) -> float:
        """The factor on the initial lr of ``registered`` at ``epoch`` (0-based)."""
        if registered.milestones is not None:
            return 0.1 ** sum(1 for m in registered.milestones if epoch >= m)
        steps = sum(1 for m in self.settings.lr_milestones if epoch >= m)
        return self.settings.lr_decay**epoch * 0.1**steps

    def apply_lr_schedule(self, phase: str, epoch: int) -> None:
        """Set lr = initial lr * schedule factor at ``epoch`` for the optimisers of ``phase``."""
        for registered in self.optimizers:
            if registered.phase == phase:
                factor = self.lr_factor(registered, epoch)
                for group in registered.optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor

    def sample_state(self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
                     fill: float = 0.0) -> SampleState:
        """New per-sample state (``train_size`` x ``shape``, filled with ``fill``) on the run's
        device; keep it as an attribute of the method so checkpoints save it. ``name`` labels it
        in the result's cost (``cost.sample_state_mb``)."""
        state = SampleState(self.train_size, tuple(shape), dtype, fill, self.device)
        self.sample_states[name] = state
        return state

    def generator(self, purpose: str) -> torch.Generator:
        """A device generator seeded by (seed, phase, epoch, purpose): reproducible across resumes."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.seed, self.phase, self.epoch, purpose))
        return gen

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast where :attr:`use_amp` says so, else a no-op."""
        if self.use_amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass outside autocast (methods call this instead of ``loss.backward()``)."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            loss.backward()

    @contextlib.contextmanager
    def at(self, phase: str, epoch: int) -> Iterator[None]:
        """Temporarily set the phase and epoch the generators derive from."""
        old = (self.phase, self.epoch)
        self.phase, self.epoch = phase, epoch
        try:
            yield
        finally:
            self.phase, self.epoch = old
