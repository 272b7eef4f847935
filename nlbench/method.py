"""The method contract: what a training-method plugin implements.

A method owns its networks, optimisers, schedules and backward/step calls; the engine owns the
device, data, augmentation, sampling, evaluation, checkpoints, seeding and progress. A minimal
method is a few dozen lines (see ``methods/standard.py`` and ``examples/``)::

    class MyMethod(nlbench.Method):
        name = "mine"
        summary = "one line on what it does"

        def build(self, ctx):
            super().build(ctx)
            self.net = ctx.backbone()
            self.opt = ctx.optimizer([self.net])

        def train_step(self, batch, phase, epoch):
            logits = self.net(batch.x).float()
            loss = F.cross_entropy(logits, batch.y)
            self.opt.zero_grad(set_to_none=True)
            self.ctx.backward(loss)
            self.opt.step()
            return {"loss": loss.detach(), "logits": logits.detach()}

        def predict(self, x):
            return self.net(x)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.context import Context


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own epoch count (CCT: "train", then "distill")."""

    name: str
    epochs: int
    #: Mini-batch size of this phase (None = the run's batch_size); CCT's distillation may differ.
    batch_size: int | None = None


@dataclass
class Batch:
    """One training mini-batch on the training device.

    ``x`` is the augmented, normalised image batch; ``y`` the labels the method may train on
    (the injected noisy labels, as changed by relabelling methods); ``index`` the dataset index of
    each sample (for methods that keep per-sample state). Clean labels are never part of a batch.
    ``raw`` holds the gathered uint8 images (B x 3 x H x W, on the device, before augmentation)
    for methods that set :attr:`Method.needs_raw` to make views of their own (``ctx.augment``);
    it is None otherwise. ``segment`` names the :class:`Segment` of the method's epoch plan the
    batch belongs to (None in an epoch the engine planned). ``landmarks`` (B x L x 2, pixels of the
    network input, moved with ``x``'s flip, scale and translation; :mod:`nlbench.landmarks`) is
    filled for methods that set :attr:`Method.needs_landmarks`, None otherwise, and so is ``flipped``.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    raw: Tensor | None = None
    segment: str | None = None
    landmarks: Tensor | None = None
    #: Which samples the augmentation flipped (B bools), beside ``landmarks``: a method that needs
    #: the points of a flipped face under their original names undoes the swap with it.
    flipped: Tensor | None = None


@dataclass
class Segment:
    """A stretch of an epoch planned by the method (:meth:`Method.epoch_plan`): batches over ``indices``.

    ``indices`` are training indices (a tensor; repeats allowed). A shuffled segment is permuted
    with a generator seeded by (seed, phase, epoch, "sampler", name); its batches have
    ``batch_size`` samples (None = the phase's), ceil(n / B) steps, or floor(n / B) with
    ``drop_last`` (at least one step when n > 0). An empty segment is skipped.
    """

    name: str
    indices: Tensor
    shuffle: bool = True
    batch_size: int | None = None


@dataclass
class NoHParams:
    """Hyperparameters of a method that has none."""


class Method:
    """Base class of method plugins; subclass it and register it with ``register_methods``.

    ``train_step`` returns a dict of tensors, kept on the device (no ``.item()``: the engine
    averages them per epoch without synchronising the GPU every step). Keys with a meaning:

    - ``loss`` (required): the scalar loss of the step; a non-finite value fails the run.
    - ``logits``: B x C training logits of the deployable network, for memorisation curves
      (training accuracy on the clean and the noisy samples against their given labels).
    - ``selected``: B boolean mask of the samples the method trained on, for label precision.
    - ``sample_score``: B floats, one per sample (an uncertainty, a weight, a per-sample loss),
      averaged by the engine separately over the samples whose given label is right and wrong
      (``score_clean``, ``score_noisy``), without the method ever seeing which are which.
      :attr:`sample_score_name` says what the score is.

    The engine also records ``selected`` and ``sample_score`` per training sample and epoch, with
    the label each sample has at the epoch's end (``samples/`` of the run folder, written by
    ``nlbench export --samples RUN``).
    - ``work``: the step's work in image-passes of one network's forward and backward (a no-grad
      forward counts 1/3), for methods whose work per epoch varies (DivideMix): summed per epoch
      (``work``, plus ``scan_work`` of ``ctx.scan``), and ``cost.work_epochs`` = total / N replaces
      the estimate networks x ``passes_per_step`` x epochs.
    - any other scalar: averaged per epoch over the steps that returned it, stored in metrics.jsonl.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    HParams: ClassVar[type] = NoHParams
    #: Whether the method needs the nominal noise rate (Co-teaching family, JoCoR).
    uses_noise_rate: ClassVar[bool] = False
    #: What ``predict`` deploys, in words, for table captions.
    deploys: ClassVar[str] = "one network"
    #: Hyperparameters whose values make this instance a named variant rather than the method
    #: itself (an ablation): every table labels the run's row with them, e.g. ``lanet
    #: [landmarks=none]``, even where no other run shown differs. Set per instance from the options.
    variant_settings: tuple[str, ...] = ()
    #: The member (of the last phase) that is the method's single deployable network: what
    #: ``nlbench table --member single`` reports, so that every method deploys one network.
    single_member: ClassVar[str] = "model"
    #: Whether ``train_step`` needs the un-augmented uint8 batch as ``batch.raw`` (to make its own
    #: views with ``ctx.augment``); off by default, so no method pays for it unasked.
    needs_raw: bool = False  # a class default; a method may set it per instance (EAC's code form)
    #: Whether ``train_step`` needs the faces' landmarks as ``batch.landmarks`` (a class default; a
    #: method may set it per instance from its hyperparameters, e.g. a landmark-free ablation). A
    #: run of such a method needs a dataset with landmarks, and their scheme and version enter its id.
    needs_landmarks: bool = False
    #: Forward-backward passes of each trained network per step (EAC: 2, the image and its flip),
    #: so the stored cost counts work rather than networks.
    passes_per_step: ClassVar[float] = 1.0
    #: What ``sample_score`` is ("weight", "uncertainty", "loss", ...): the name of its column in
    #: ``nlbench export --samples``; lowercase letters, digits and ``_``.
    sample_score_name: ClassVar[str] = "score"

    def __init__(self, hp: Any | None = None) -> None:
        self.hp = hp if hp is not None else self.HParams()
        self.ctx: Context | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def validate(cls, hp: Any, settings: dict[str, Any]) -> None:
        """Reject hyperparameter combinations that cannot run, raising ``ValueError`` with the reason.

        ``settings`` holds the resolved run settings: ``epochs``, ``noise_rate``, ``batch_size``,
        ``image_size``, ``augmentation`` (the resolved pipeline, never ""), ``drop_last``,
        ``backbone``, ``dataset`` (its name), ``num_classes``, ``balanced_sampling``,
        ``has_landmarks`` and ``landmark_scheme`` (None without landmarks).
        """

    @classmethod
    def canonical(cls, hp: Any) -> Any:
        """The same hyperparameters with settings that have no effect in this combination reset.

        Equivalent settings then share one run id, so a grid does not train one experiment twice
        (CCT with one network ignores ``consistency``). The default changes nothing.
        """
        return hp

    def build(self, ctx: Context) -> None:
        """Create networks (``ctx.backbone()``) and optimisers (``ctx.optimizer(...)``)."""
        self.ctx = ctx

    def phases(self) -> list[Phase]:
        """The training phases in order; the default is one "train" phase of ``ctx.epochs``."""
        assert self.ctx is not None
        return [Phase("train", self.ctx.epochs)]

    def start_phase(self, phase: Phase) -> None:
        """Prepare a phase: modes, freezing (also called when a run resumes inside it, after the
        state was loaded, so it must not reset learnable state)."""

    def on_epoch_start(self, phase: Phase, epoch: int) -> None:
        """Update per-epoch schedules; ``epoch`` is 0-based within the phase."""

    def epoch_plan(self, phase: Phase, epoch: int) -> list[Segment] | None:
        """The epoch's batches as segments over method-chosen samples, or None (the default): the
        engine's epoch (one seeded permutation of the training set, or the class-balanced draw).

        Called after :meth:`on_epoch_start`; the segments run in order, each batch carrying its
        segment's name in ``batch.segment``; ``max_steps_per_epoch`` caps their total. A plan may
        depend only on state at the epoch's start and seeded generators, so resume stays exact.
        """
        return None

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        """Forward, loss, backward and optimiser step for one mini-batch."""
        raise NotImplementedError(f"method {self.name!r} must implement train_step")

    def on_epoch_end(self, phase: Phase, epoch: int) -> dict[str, float]:
        """Finish an epoch (e.g. apply relabelling); returns extra metrics to store."""
        return {}

    # -- inference -------------------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        """Logits of the deployable model for a normalised image batch."""
        raise NotImplementedError(f"method {self.name!r} must implement predict")

    def predict_members(self, x: Tensor, phase: Phase) -> dict[str, Tensor]:
        """Scores (argmax = prediction) of every model worth evaluating, ``model`` = deployable.

        Multi-network methods add ``net1``..``netN`` and ``ensemble``.
        """
        return {"model": self.predict(x)}

    def deployment(self) -> dict[str, Any]:
        """What the run deploys, recorded in its result: ``deploys`` (words), ``single`` (the
        member key of its single deployable network), ``beside`` (label -> member key of models a
        table shows next to the deployable one, e.g. CCT's teachers' ensemble next to its student)
        and, for a named variant, ``variant`` (:attr:`variant_settings`)."""
        last = self.phases()[-1].name
        out = {"deploys": self.deploys, "single": f"{last}/{self.single_member}", "beside": {}}
        if self.variant_settings:
            out["variant"] = list(self.variant_settings)
        return out

    def trained_networks(self, phase: Phase) -> int:
        """How many networks ``phase`` trains (for the cost: networks x epochs); default: all of them."""
        return len(self.modules())

    def modules(self) -> list[nn.Module]:
        """All networks of the method (switched between train and eval mode by the engine)."""
        found: list[nn.Module] = []
        for value in vars(self).values():
            if isinstance(value, nn.Module):
                found.append(value)
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, nn.Module) for v in value):
                found.extend(value)
        return found

    def train_mode(self, phase: Phase) -> None:
        """Put the networks that train in ``phase`` into train mode (default: all of them)."""
        for module in self.modules():
            module.train()

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: by default every network, optimiser and per-sample state attribute."""
        state: dict[str, Any] = {}
        from nlbench.context import SampleState

        for key, value in vars(self).items():
            if isinstance(value, (nn.Module, torch.optim.Optimizer, SampleState)):
                state[key] = value.state_dict()
            elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, (nn.Module, torch.optim.Optimizer)) for v in value
            ):
                state[key] = [v.state_dict() for v in value]
        state["extra"] = self.extra_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        for key, saved in state.items():
            if key == "extra":
                continue
            value = getattr(self, key)
            if isinstance(value, (list, tuple)):
                for item, item_state in zip(value, saved, strict=True):
                    item.load_state_dict(item_state)
            else:
                value.load_state_dict(saved)
        self.load_extra_state(state.get("extra", {}))

    def deployable_state(self) -> dict[str, Any]:
        """The weights of what :meth:`predict` uses, for ``model.pt`` of a finished run.

        The default keeps every network (no optimiser state); a method whose deployable model is
        one of several networks (CCT's student) returns just that one.
        """
        state: dict[str, Any] = {}
        for key, value in vars(self).items():
            if isinstance(value, nn.Module):
                state[key] = value.state_dict()
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, nn.Module) for v in value):
                state[key] = [v.state_dict() for v in value]
        return state

    def extra_state(self) -> dict[str, Any]:
        """State other than networks and optimisers (schedules kept in attributes, counters)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""


def hparams_dict(hp: Any) -> dict[str, Any]:
    """The hyperparameters of a method as a plain dict (for the run spec and result)."""
    return dataclasses.asdict(hp)
