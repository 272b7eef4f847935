"""The epoch body of training: sample order, image source, one step, the per-epoch summary.

:class:`EpochRunner` is the engine's training loop for one phase, a step at a time:
``start(epoch)`` sets the lr schedule, the seeded sample order and the augmentation stream;
``step()`` gathers a batch from the image source, augments it on the device in one batched call
and runs ``method.train_step`` under autocast; the step's outputs are accumulated on the device by
:class:`StepMeter` (no per-step synchronisation) and, per sample, by :class:`SampleRecorder`;
``finish()`` synchronises once and returns the epoch's training summary (and leaves the epoch's
per-sample record in ``samples``). The throughput benchmark times this same object, so what is
measured is what is trained.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import torch

from nlbench.context import Context, LabelStore, last_occurrences
from nlbench.data.augment import Augmenter
from nlbench.errors import RunFailed
from nlbench.landmarks import Scheme, to_input
from nlbench.method import Batch, Method, Phase, Segment
from nlbench.seeding import derive_seed
from nlbench.settings import TrainSettings
from nlbench.store import SAMPLE_COLUMNS

DEVICE_CACHE_SHARE = 0.3  # at most this share of free GPU memory holds the uint8 image cache


def epoch_order(
    n: int, settings: TrainSettings, gen: torch.Generator, weights: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """The sample order of one epoch and its number of steps."""
    if weights is not None:
        order = torch.multinomial(weights, n, replacement=True, generator=gen)
    else:
        order = torch.randperm(n, generator=gen)
    steps = step_count(n, settings.batch_size, settings.drop_last)
    if settings.max_steps_per_epoch:
        steps = min(steps, settings.max_steps_per_epoch)
    return order, steps


def step_count(n: int, batch: int, drop_last: bool) -> int:
    """Steps over ``n`` samples in batches of ``batch``: ceil(n / B), or floor with ``drop_last`` (at least
    one step when 0 < n < B)."""
    return n // batch if drop_last and n >= batch else math.ceil(n / batch)


@dataclasses.dataclass
class PlannedStep:
    """One batch of a method-planned epoch: its segment's name and its training indices."""

    segment: str
    index: torch.Tensor


def planned_steps(plan: list[Segment], settings: TrainSettings, seed: int, phase: str,
                  epoch: int) -> list[PlannedStep]:
    """The batches of a method's epoch plan in order (see :class:`nlbench.method.Segment`), capped at
    ``max_steps_per_epoch`` in total."""
    steps: list[PlannedStep] = []
    for segment in plan:
        if not isinstance(segment, Segment):
            raise TypeError(f"epoch_plan must return a list of nlbench.Segment, got {type(segment).__name__}")
        indices = torch.as_tensor(segment.indices).reshape(-1).long()
        n = int(indices.numel())
        if n == 0:
            continue
        if segment.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(seed, phase, epoch, "sampler", segment.name))
            indices = indices[torch.randperm(n, generator=gen).to(indices.device)]
        batch = segment.batch_size or settings.batch_size
        for step in range(step_count(n, batch, settings.drop_last)):
            steps.append(PlannedStep(segment.name, indices[step * batch : (step + 1) * batch]))
    if settings.max_steps_per_epoch:
        steps = steps[: settings.max_steps_per_epoch]
    return steps


def describe_method(method: Method) -> str:
    """``method 'name' (its plugin file)``, for errors raised inside a method plugin."""
    import inspect

    try:
        source = inspect.getsourcefile(type(method)) or type(method).__module__
    except TypeError:
        source = type(method).__module__
    return f"method {getattr(method, 'name', type(method).__name__)!r} ({source})"


def relabel_counts(labels: LabelStore, clean: torch.Tensor) -> dict[str, int]:
    """How many training labels differ from the injected ones now, and how many of those are right.

    Only relabelling methods (SCN, RUL with ``relabel``) change labels; for them ``labels_restored`` counts changes that
    gave back the true label, ``labels_changed`` all changed labels, ``relabel_events`` every
    write that changed a label (a label changed twice counts twice).
    """
    changed = labels.current != labels.given
    restored = changed & (labels.current == clean)
    counts = torch.stack([changed.sum(), restored.sum(), labels.changes]).cpu().tolist()
    return {"labels_changed": counts[0], "labels_restored": counts[1], "relabel_events": counts[2]}


def split_accuracy(correct: torch.Tensor, is_noisy: torch.Tensor, prefix: str) -> dict[str, float | None]:
    """``<prefix>_clean`` and ``<prefix>_noisy``: accuracy in % over the samples whose given label is
    right and wrong (None where a subset is empty)."""
    clean, noisy = ~is_noisy, is_noisy
    n_clean, hit_clean, n_noisy, hit_noisy = torch.stack(
        [clean.sum(), (correct & clean).sum(), noisy.sum(), (correct & noisy).sum()]).cpu().tolist()
    return {f"{prefix}_clean": 100.0 * hit_clean / n_clean if n_clean else None,
            f"{prefix}_noisy": 100.0 * hit_noisy / n_noisy if n_noisy else None}


class StepMeter:
    """Accumulates a method's step outputs on the device; synchronised once per epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.host_sums: dict[str, float] = {}
        #: Steps that returned each key: a key a step leaves out (a skipped batch) is not averaged as 0.
        self.key_steps: dict[str, int] = {}
        self.losses: list[torch.Tensor] = []
        self.counts = torch.zeros(6, device=device)  # clean n/correct, noisy n/correct, selected, selected clean
        self.scores = torch.zeros(4, device=device)  # sample_score: clean n/sum, noisy n/sum
        self.has_logits = False
        self.has_selected = False
        self.has_score = False
        #: Sum of the steps' ``work`` outputs (None until a step returns one).
        self.work: torch.Tensor | float | None = None

    def add(self, out: dict[str, torch.Tensor], y: torch.Tensor, is_noisy: torch.Tensor) -> None:
        """Add one step's outputs; ``is_noisy`` marks samples whose given label is wrong."""
        if "loss" not in out:
            raise RunFailed("train_step must return a dict with a 'loss' entry.")
        self.losses.append(out["loss"].detach().float().reshape(()))
        for key, value in out.items():
            if key in ("loss", "logits", "selected", "sample_score"):
                continue
            if key == "work":  # summed, not averaged
                work = value.detach().float().reshape(()) if isinstance(value, torch.Tensor) else float(value)
                self.work = work if self.work is None else self.work + work
                continue
            self.key_steps[key] = self.key_steps.get(key, 0) + 1
            if isinstance(value, torch.Tensor) and value.device == self.device:
                value = value.detach().float().reshape(())
                self.sums[key] = self.sums.get(key, torch.zeros((), device=self.device)) + value
            else:  # host values stay on the host: copying them to the GPU would block every step
                self.host_sums[key] = self.host_sums.get(key, 0.0) + float(value)
        update = torch.zeros(6, device=self.device)
        if "logits" in out:
            self.has_logits = True
            correct = (out["logits"].argmax(dim=1) == y).float()
            clean = (~is_noisy).float()
            update[0] = clean.sum()
            update[1] = (correct * clean).sum()
            update[2] = is_noisy.float().sum()
            update[3] = (correct * is_noisy.float()).sum()
        if "selected" in out:
            self.has_selected = True
            selected = out["selected"].float()
            update[4] = selected.sum()
            update[5] = (selected * (~is_noisy).float()).sum()
        self.counts += update
        if "sample_score" in out:
            self.has_score = True
            score = out["sample_score"].detach().float().reshape(-1)
            noisy = is_noisy.float()
            # torch.where, not a product: an infinite score of one subset must not become NaN in the other.
            self.scores += torch.stack([(1 - noisy).sum(), torch.where(is_noisy, 0.0, score).sum(), noisy.sum(),
                                        torch.where(is_noisy, score, 0.0).sum()])

    def summary(self, steps: int, phase: str, epoch: int) -> dict[str, float | None]:
        """Per-epoch averages (None where a subset is empty: JSON has no NaN); a non-finite loss
        fails the run naming the epoch and batch."""
        losses = torch.stack(self.losses) if self.losses else torch.zeros(1, device=self.device)
        finite = torch.isfinite(losses)
        values = {k: v for k, v in self.sums.items()}
        packed = torch.cat([losses.mean().reshape(1), finite.all().float().reshape(1), self.counts,
                            self.scores]).cpu().tolist()
        if packed[1] < 1:
            bad = int((~finite).nonzero()[0, 0].item())
            raise RunFailed(
                f"the loss became {losses[bad].item()} in phase {phase}, epoch {epoch + 1}, batch {bad + 1}; "
                "the run is marked failed and what was stored is kept. Lower the learning rate or check the data."
            )
        summary = {"loss": packed[0]}
        summary.update({k: v / max(1, self.key_steps.get(k, steps)) for k, v in self.host_sums.items()})
        if values:
            names = list(values)
            divisors = torch.tensor([max(1, self.key_steps.get(n, steps)) for n in names], device=self.device)
            averaged = (torch.stack([values[n] for n in names]) / divisors).cpu().tolist()
            summary.update(zip(names, averaged))
        counts, scores = packed[2:8], packed[8:]
        if self.has_score:
            summary["score_clean"] = scores[1] / scores[0] if scores[0] else None
            summary["score_noisy"] = scores[3] / scores[2] if scores[2] else None
        if self.has_logits:
            summary["acc_clean"] = 100.0 * counts[1] / counts[0] if counts[0] else None
            summary["acc_noisy"] = 100.0 * counts[3] / counts[2] if counts[2] else None
        if self.work is not None:
            summary["work"] = float(self.work)
        if self.has_selected:
            summary["label_precision"] = 100.0 * counts[5] / counts[4] if counts[4] else None
            summary["selected_per_step"] = counts[4] / max(1, steps)
        return summary


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest signed integer type holding every class and -1 (int8 up to 127 classes)."""
    return torch.int8 if num_classes <= 127 else torch.int16 if num_classes <= 32767 else torch.int32


class SampleRecorder:
    """What a method decided about each training sample in one epoch, gathered on the device.

    Every step scatters into N-long device tensors by the batch's training indices (no per-sample
    Python, no synchronisation); :meth:`finish` turns them into the epoch's record, numpy arrays of
    N entries by training index:

    - ``seen`` (uint8): in how many batches of the epoch the sample was (0: none; more than one
      with balanced sampling or a method's own epoch plan; saturates at 255);
    - ``selected`` (int8): 1 if a batch's ``selected`` mask picked it at least once, 0 if every
      batch that returned a mask left it out, -1 unknown (the method returns no mask, or the sample
      was in no batch that returned one);
    - ``score`` (float16, about 3 significant digits; beyond 65504 it is inf): the ``sample_score``
      of the last batch that scored the sample, NaN if none did;
    - ``relabelled_to`` (int8, int16 past 127 classes): the sample's training label at the epoch's
      end (after ``on_epoch_end``) where it differs from the given noisy label, else -1.
    """

    def __init__(self, n: int, num_classes: int, device: torch.device) -> None:
        self.n, self.num_classes = n, num_classes
        self.seen = torch.zeros(n, dtype=torch.int32, device=device)
        self.judged = torch.zeros(n, dtype=torch.int32, device=device)  # in a batch that returned `selected`
        self.chosen = torch.zeros(n, dtype=torch.int32, device=device)  # selected there
        self.score = torch.full((n,), float("nan"), dtype=torch.float32, device=device)

    def add(self, index: torch.Tensor, out: dict[str, Any], where: str) -> None:
        """Record one step: ``index`` its samples' training indices, ``out`` what ``train_step`` returned."""
        ones = torch.ones_like(index, dtype=torch.int32)
        self.seen.index_add_(0, index, ones)  # integer sums: the same on any device and order
        selected, score = out.get("selected"), out.get("sample_score")
        if isinstance(selected, torch.Tensor):
            self._check(selected, index, "selected", where)
            self.judged.index_add_(0, index, ones)
            self.chosen.index_add_(0, index, (selected.reshape(-1) != 0).to(torch.int32))
        if isinstance(score, torch.Tensor):
            self._check(score, index, "sample_score", where)
            # The last occurrence of a repeated index wins, on any device (an indexed write with
            # repeats is otherwise free to keep any of them on a GPU).
            keep = last_occurrences(index)
            self.score[index[keep]] = score.detach().reshape(-1)[keep].float()

    @staticmethod
    def _check(value: torch.Tensor, index: torch.Tensor, key: str, where: str) -> None:
        if value.numel() != index.numel():
            raise RunFailed(f"train_step returned {key!r} of shape {tuple(value.shape)} for a batch of "
                            f"{index.numel()} samples; it must hold one value per sample ({where})")

    def finish(self, labels: LabelStore) -> dict[str, np.ndarray]:
        """The epoch's record (class docstring), on the host; call after the method's ``on_epoch_end``."""
        minus_one = torch.tensor(-1, dtype=torch.int8, device=self.seen.device)
        selected = torch.where(self.judged > 0, (self.chosen > 0).to(torch.int8), minus_one)
        relabelled = torch.where(labels.current != labels.given, labels.current, -1)
        return {"seen": self.seen.clamp(max=255).to(torch.uint8).cpu().numpy(),
                "selected": selected.cpu().numpy(),
                "score": self.score.to(torch.float16).cpu().numpy(),
                "relabelled_to": relabelled.to(label_dtype(self.num_classes)).cpu().numpy()}


#: The form of a :attr:`nlbench.Method.sample_score_name` (it names a column of exported tables).
SCORE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def score_name(method: Method) -> str:
    """The method's :attr:`~nlbench.Method.sample_score_name`, checked: a lowercase name that is not
    one of the other columns of ``nlbench export --samples``."""
    name = getattr(method, "sample_score_name", "score")
    if not isinstance(name, str) or not SCORE_NAME.fullmatch(name) or name in SAMPLE_COLUMNS:
        raise RunFailed(f"{describe_method(method)}: sample_score_name must be a lowercase name of letters, digits "
                        f"and _ (up to 40 characters) other than {', '.join(SAMPLE_COLUMNS)}; got {name!r}")
    return name


class ImageCache:
    """The uint8 training images, placed by :meth:`place`, gathered by index onto the device."""

    def __init__(self, placed: torch.Tensor, device: torch.device) -> None:
        self.images, self.device = placed, device
        #: The faces' landmarks (N x L x 2 fractions of the image, on the device) and their scheme,
        #: for a method that trains on them; None otherwise.
        self.landmarks: torch.Tensor | None = None
        self.scheme: Scheme | None = None

    @staticmethod
    def place(images: torch.Tensor, device: torch.device, settings: TrainSettings) -> torch.Tensor:
        """Keep the cache on the GPU when it fits (or is asked to), else pinned host memory."""
        if device.type != "cuda" or settings.cache_on_device == "no":
            return images
        if settings.cache_on_device == "auto":
            free, _ = torch.cuda.mem_get_info(device)
            if images.numel() > DEVICE_CACHE_SHARE * free:
                return images.pin_memory()
        return images.to(device)

    def start_epoch(self, order_cpu: torch.Tensor, steps: int, batch: int) -> None:
        """Nothing to prepare: batches are gathered when asked for (a prefetching source would start here)."""

    def get(self, step: int, index: torch.Tensor) -> torch.Tensor:
        """The images of ``index`` (a device tensor) on the device."""
        if self.images.device == self.device:
            return self.images.index_select(0, index)
        batch = self.images.index_select(0, index.cpu())
        return batch.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else batch


class EpochRunner:
    """The training epochs of one phase, a step at a time (see the module docstring)."""

    def __init__(self, method: Method, ctx: Context, phase: Phase, augmenter: Augmenter, source: ImageCache,
                 labels: LabelStore, clean: torch.Tensor, settings: TrainSettings,
                 weights: torch.Tensor | None = None, meter_cls: type[StepMeter] = StepMeter) -> None:
        self.method, self.ctx, self.phase, self.augmenter, self.source = method, ctx, phase, augmenter, source
        if phase.batch_size is not None and phase.batch_size != settings.batch_size:
            settings = dataclasses.replace(settings, batch_size=phase.batch_size)
        self.labels, self.clean, self.settings, self.weights = labels, clean, settings, weights
        self.is_noisy = clean != labels.given
        self.meter_cls = meter_cls
        self.device = ctx.device
        self.n = int(clean.numel())
        self.epoch = -1
        self.step_index = 0
        self.steps = 0
        #: The batches of a method-planned epoch (None: the engine's own order, ``self.order``).
        self.plan: list[PlannedStep] | None = None
        self.meter: StepMeter | None = None
        self.recorder: SampleRecorder | None = None
        #: The per-sample record of the last finished epoch (:class:`SampleRecorder`), for the store.
        self.samples: dict[str, np.ndarray] | None = None

    def start(self, epoch: int) -> int:
        """Begin ``epoch`` (0-based); returns its number of steps."""
        ctx, method, phase = self.ctx, self.method, self.phase
        self.epoch = epoch
        ctx.phase, ctx.epoch = phase.name, epoch
        ctx.apply_lr_schedule(phase.name, epoch)
        # The global generators (dropout and anything else a method draws without a generator)
        # are reseeded every epoch, so a run resumed at an epoch boundary draws what an
        # uninterrupted one would.
        torch.manual_seed(derive_seed(ctx.seed, "global-rng", phase.name, epoch))
        ctx.scan_correct, ctx.scan_work = None, 0.0
        method.on_epoch_start(phase, epoch)
        method.train_mode(phase)
        plan = method.epoch_plan(phase, epoch)
        if plan is None:
            self.plan = None
            sampler = torch.Generator().manual_seed(derive_seed(ctx.seed, phase.name, epoch, "sampler"))
            order, self.steps = epoch_order(self.n, self.settings, sampler, self.weights)
        else:
            self.plan = planned_steps(plan, self.settings, ctx.seed, phase.name, epoch)
            self.steps = len(self.plan)
            order = torch.cat([s.index.cpu() for s in self.plan]) if self.plan else torch.zeros(0, dtype=torch.long)
            self.plan = [PlannedStep(s.segment, s.index.to(self.device)) for s in self.plan]
        self.source.start_epoch(order, self.steps, self.settings.batch_size)
        self.order = order.to(self.device)
        self.augment_gen = ctx.generator("augment")
        self.meter = self.meter_cls(self.device)
        self.recorder = SampleRecorder(self.n, self.ctx.num_classes, self.device)
        self.samples = None
        self.step_index = 0
        return self.steps

    def step(self) -> int:
        """Train one batch of the current epoch; returns its size."""
        batch, step = self.settings.batch_size, self.step_index
        segment = None
        if self.plan is None:
            index = self.order[step * batch : (step + 1) * batch]
        else:
            segment, index = self.plan[step].segment, self.plan[step].index
        raw = self.source.get(step, index)
        landmarks = flipped = None
        if self.method.needs_landmarks:
            x, geometry = self.augmenter.train_geometry(raw, self.augment_gen)
            assert self.source.landmarks is not None and self.source.scheme is not None, "assembled without landmarks"
            landmarks = to_input(self.source.landmarks[index], geometry, self.augmenter.size, self.source.scheme)
            flipped = geometry.flip
        else:
            x = self.augmenter.train(raw, self.augment_gen)
        y = self.labels.current[index]
        where = f"in phase {self.phase.name}, epoch {self.epoch + 1}, batch {step + 1}"
        try:
            with self.ctx.autocast():
                out = self.method.train_step(Batch(x, y, index, raw if self.method.needs_raw else None, segment,
                                                   landmarks, flipped), self.phase, self.epoch)
        except (RunFailed, KeyboardInterrupt):
            raise
        except (Exception, SystemExit) as err:  # a plugin's sys.exit fails its run, it does not end nlbench
            raise RunFailed(f"{describe_method(self.method)}: train_step raised {type(err).__name__}: {err} "
                            f"({where})") from err
        if not isinstance(out, dict) or not isinstance(out.get("loss"), torch.Tensor) or out["loss"].numel() != 1:
            got = type(out).__name__ if not isinstance(out, dict) else f"loss = {type(out.get('loss')).__name__}" + (
                f" of shape {tuple(out['loss'].shape)}" if isinstance(out.get("loss"), torch.Tensor) else "")
            raise RunFailed(f"{describe_method(self.method)}: train_step must return a dict whose 'loss' is a "
                            f"scalar tensor, got {got} ({where})")
        self.meter.add(out, y, self.is_noisy[index])  # type: ignore[union-attr]
        self.recorder.add(index, out, where)  # type: ignore[union-attr]
        self.step_index += 1
        return int(index.numel())

    def finish(self) -> dict[str, Any]:
        """End the epoch: the training summary (one synchronisation), the method's and the relabel counts."""
        assert self.meter is not None, "finish() without start()"
        summary = self.meter.summary(max(1, self.step_index), self.phase.name, self.epoch)
        summary.update(self.method.on_epoch_end(self.phase, self.epoch))
        summary.update(relabel_counts(self.labels, self.clean))
        self.samples = self.recorder.finish(self.labels) if self.recorder is not None else None
        self.recorder = None
        correct, self.ctx.scan_correct = self.ctx.scan_correct, None
        if correct is not None:
            summary.update(split_accuracy(correct, self.is_noisy, "scan_acc"))
        scan_work, self.ctx.scan_work = self.ctx.scan_work, 0.0
        if scan_work:
            summary["scan_work"] = scan_work
        self.meter = None
        return summary
