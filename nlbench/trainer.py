"""The engine: runs one resolved spec from data to result.json, resuming from its checkpoint.

Per epoch: the sampler gives index batches -> the batch is gathered from the uint8 cache on the
training device -> augmented there in one batched call -> ``method.train_step`` -> the step's
outputs are accumulated on the device (no per-step synchronisation) -> evaluation on the test set
-> one line in metrics.jsonl and an atomic checkpoint. Every random draw derives from (seed,
phase, epoch), so a resumed run follows the same path as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlbench.augment import Augmenter
from nlbench.backbone import BackboneFactory
from nlbench.cache import SplitData, load_split
from nlbench.config import TrainSettings
from nlbench.context import Context, LabelStore, derive_seed
from nlbench.dataset import Dataset
from nlbench.environment import describe_environment, peak_memory_mb
from nlbench.errors import RunFailed, UsageError
from nlbench.evaluate import accuracies, confusion, per_class_report, predict_split
from nlbench.method import Batch, Method, Phase
from nlbench.noise import inject_noise
from nlbench.plugins import Registry
from nlbench.progress import Reporter
from nlbench.results import summarise_history
from nlbench.store import NOISY_LABELS, RunDir, run_dir_name

DEVICE_CACHE_SHARE = 0.3  # at most this share of free GPU memory holds the uint8 image cache


@dataclass
class Outcome:
    """What ``nlbench run`` reports: the result, where it is, and whether it was already done."""

    run_dir: RunDir
    result: dict[str, Any]
    skipped: bool = False


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; an unavailable request is a usage error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto.")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise UsageError(f"unknown device {requested!r}; use cpu, cuda or auto.")
    return torch.device(requested)


def make_dataset(registry: Registry, spec: dict[str, Any]) -> Dataset:
    """Instantiate and check the dataset plugin of a spec."""
    cls = registry.dataset(spec["dataset"])
    root = Path(spec["data_root"]) if spec["data_root"] else None
    dataset = cls(root, spec["dataset_options"])
    dataset.check()
    return dataset


def training_labels(dataset: Dataset, train: SplitData, spec: dict[str, Any]) -> tuple[np.ndarray, float]:
    """The noisy label vector of the run and its realised noise rate."""
    clean = train.table.labels
    noise = spec["noise"]
    if noise["source"] == "dataset":
        if train.table.noisy_labels is None:
            raise UsageError(
                f"dataset {dataset.name!r} ships no noisy training labels; use --noise-source injected."
            )
        noisy = train.table.noisy_labels
        return noisy, float(np.mean(noisy != clean))
    pair_order = None
    if dataset.to_affectnet is not None:
        pair_order = tuple(int(i) for i in np.argsort(dataset.to_affectnet))
    result = inject_noise(
        clean, dataset.num_classes, noise["rate"], noise["mode"], dataset=spec["dataset"], seed=spec["seed"],
        pair_order=pair_order,
    )
    return result.labels, result.realised_rate


def spec_settings(spec: dict[str, Any]) -> TrainSettings:
    """The training settings of a resolved spec."""
    return TrainSettings(**spec["train"], pretrained=spec["pretrained_path"] or "", **spec["runtime"])


def build_context(spec: dict[str, Any], dataset: Dataset, labels: LabelStore, device: torch.device) -> Context:
    """The context a method of this spec is built with (also used by nlbench.testing)."""
    settings = spec_settings(spec)
    pretrained = Path(spec["pretrained_path"]) if spec["pretrained_path"] else None
    return Context(
        device=device, num_classes=dataset.num_classes, class_names=tuple(dataset.class_names),
        epochs=settings.epochs, batch_size=settings.batch_size, train_size=int(labels.given.numel()),
        noise_rate=spec["noise"]["rate"], seed=spec["seed"], settings=settings,
        backbones=BackboneFactory(settings.backbone, dataset.num_classes, spec["seed"], pretrained),
        labels=labels,
    )


def epoch_order(
    n: int, settings: TrainSettings, gen: torch.Generator, weights: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """The sample order of one epoch and its number of steps."""
    if weights is not None:
        order = torch.multinomial(weights, n, replacement=True, generator=gen)
    else:
        order = torch.randperm(n, generator=gen)
    batch = settings.batch_size
    steps = n // batch if settings.drop_last and n >= batch else math.ceil(n / batch)
    if settings.max_steps_per_epoch:
        steps = min(steps, settings.max_steps_per_epoch)
    return order, steps


def relabel_counts(labels: LabelStore, clean: torch.Tensor) -> dict[str, int]:
    """How many training labels differ from the injected ones now, and how many of those are right.

    Only relabelling methods (SCN) change labels; for them ``labels_restored`` counts changes that
    gave back the true label, ``labels_changed`` all changed labels, ``relabel_events`` every
    write that changed a label (a label changed twice counts twice).
    """
    changed = labels.current != labels.given
    restored = changed & (labels.current == clean)
    counts = torch.stack([changed.sum(), restored.sum(), labels.changes]).cpu().tolist()
    return {"labels_changed": counts[0], "labels_restored": counts[1], "relabel_events": counts[2]}


class StepMeter:
    """Accumulates a method's step outputs on the device; synchronised once per epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.host_sums: dict[str, float] = {}
        self.losses: list[torch.Tensor] = []
        self.counts = torch.zeros(6, device=device)  # clean n/correct, noisy n/correct, selected, selected clean
        self.has_logits = False
        self.has_selected = False

    def add(self, out: dict[str, torch.Tensor], y: torch.Tensor, is_noisy: torch.Tensor) -> None:
        """Add one step's outputs; ``is_noisy`` marks samples whose given label is wrong."""
        if "loss" not in out:
            raise RunFailed("train_step must return a dict with a 'loss' entry.")
        self.losses.append(out["loss"].detach().float().reshape(()))
        for key, value in out.items():
            if key in ("loss", "logits", "selected"):
                continue
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

    def summary(self, steps: int, phase: str, epoch: int) -> dict[str, float | None]:
        """Per-epoch averages (None where a subset is empty: JSON has no NaN); a non-finite loss
        fails the run naming the epoch and batch."""
        losses = torch.stack(self.losses) if self.losses else torch.zeros(1, device=self.device)
        finite = torch.isfinite(losses)
        values = {k: v for k, v in self.sums.items()}
        packed = torch.cat([losses.mean().reshape(1), finite.all().float().reshape(1), self.counts]).cpu().tolist()
        if packed[1] < 1:
            bad = int((~finite).nonzero()[0, 0].item())
            raise RunFailed(
                f"the loss became {losses[bad].item()} in phase {phase}, epoch {epoch + 1}, batch {bad + 1}; "
                "the run is marked failed and what was stored is kept. Lower the learning rate or check the data."
            )
        summary = {"loss": packed[0]}
        summary.update({k: v / max(1, steps) for k, v in self.host_sums.items()})
        if values:
            names = list(values)
            averaged = (torch.stack([values[n] for n in names]) / max(1, steps)).cpu().tolist()
            summary.update(zip(names, averaged))
        counts = packed[2:]
        if self.has_logits:
            summary["acc_clean"] = 100.0 * counts[1] / counts[0] if counts[0] else None
            summary["acc_noisy"] = 100.0 * counts[3] / counts[2] if counts[2] else None
        if self.has_selected:
            summary["label_precision"] = 100.0 * counts[5] / counts[4] if counts[4] else None
            summary["selected_per_step"] = counts[4] / max(1, steps)
        return summary


class ImageCache:
    """The uint8 training images, placed by :meth:`place`, gathered by index onto the device."""

    def __init__(self, placed: torch.Tensor, device: torch.device) -> None:
        self.images, self.device = placed, device

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
    """The training epochs of one phase, a step at a time: the body of the engine's training loop.

    ``start(epoch)`` sets the lr schedule, the seeded sample order and the augmentation stream;
    ``step()`` trains one batch (gather -> augment -> ``train_step`` under autocast -> accumulate on
    the device); ``finish()`` synchronises once and returns the epoch's training summary.
    ``benchmarks/throughput.py`` times this same object, so what is measured is what is trained.
    """

    def __init__(self, method: Method, ctx: Context, phase: Phase, augmenter: Augmenter, source: ImageCache,
                 labels: LabelStore, clean: torch.Tensor, settings: TrainSettings,
                 weights: torch.Tensor | None = None, meter_cls: type[StepMeter] = StepMeter) -> None:
        self.method, self.ctx, self.phase, self.augmenter, self.source = method, ctx, phase, augmenter, source
        self.labels, self.clean, self.settings, self.weights = labels, clean, settings, weights
        self.is_noisy = clean != labels.given
        self.meter_cls = meter_cls
        self.device = ctx.device
        self.n = int(clean.numel())
        self.epoch = -1
        self.step_index = 0
        self.steps = 0
        self.meter: StepMeter | None = None

    def start(self, epoch: int) -> int:
        """Begin ``epoch`` (0-based); returns its number of steps."""
        ctx, method, phase = self.ctx, self.method, self.phase
        self.epoch = epoch
        ctx.phase, ctx.epoch = phase.name, epoch
        ctx.apply_lr_schedule(phase.name, epoch)
        method.on_epoch_start(phase, epoch)
        method.train_mode(phase)
        sampler = torch.Generator().manual_seed(derive_seed(ctx.seed, phase.name, epoch, "sampler"))
        order, self.steps = epoch_order(self.n, self.settings, sampler, self.weights)
        self.source.start_epoch(order, self.steps, self.settings.batch_size)
        self.order = order.to(self.device)
        self.augment_gen = ctx.generator("augment")
        self.meter = self.meter_cls(self.device)
        self.step_index = 0
        return self.steps

    def step(self) -> int:
        """Train one batch of the current epoch; returns its size."""
        batch, step = self.settings.batch_size, self.step_index
        index = self.order[step * batch : (step + 1) * batch]
        x = self.augmenter.train(self.source.get(step, index), self.augment_gen)
        y = self.labels.current[index]
        with self.ctx.autocast():
            out = self.method.train_step(Batch(x, y, index), self.phase, self.epoch)
        self.meter.add(out, y, self.is_noisy[index])  # type: ignore[union-attr]
        self.step_index += 1
        return int(index.numel())

    def finish(self) -> dict[str, Any]:
        """End the epoch: the training summary (one synchronisation), the method's and the relabel counts."""
        assert self.meter is not None, "finish() without start()"
        summary = self.meter.summary(max(1, self.step_index), self.phase.name, self.epoch)
        summary.update(self.method.on_epoch_end(self.phase, self.epoch))
        summary.update(relabel_counts(self.labels, self.clean))
        self.meter = None
        return summary


class Engine:
    """Trains one run; see the module docstring for the flow."""

    def __init__(self, spec: dict[str, Any], registry: Registry, runs_dir: Path, device: torch.device,
                 reporter: Reporter, cache_dir: Path | None = None) -> None:
        self.spec = spec
        self.registry = registry
        self.device = device
        self.reporter = reporter
        self.cache_dir = cache_dir
        self.run = RunDir(runs_dir / run_dir_name(spec, spec["run_id"]))
        self.hook = registry.manager.hook if registry.manager is not None else None

    def execute(self, force: bool = False) -> Outcome:
        """Run (or resume, or skip) the spec and return its outcome."""
        if self.run.is_done() and not force:
            return Outcome(self.run, self.run.read_json("result.json"), skipped=True)
        # A wrong data root is a usage error: say so before a run folder is made for it.
        self.dataset = make_dataset(self.registry, self.spec)
        self.run.lock()
        try:
            if force:
                self.run.clear()
            self.run.write_spec(self.spec)
            self.run.set_status("running", started=time.time())
            try:
                result = self._train()
            except BaseException as err:
                state = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
                self.run.set_status(state, error=f"{type(err).__name__}: {err}")
                if self.hook is not None:
                    self.hook.on_run_end(run=self.run, result=None, error=err)
                raise
            self.run.write_result(result)
            self.run.set_status("done", finished=time.time())
            if self.hook is not None:
                self.hook.on_run_end(run=self.run, result=result, error=None)
            return Outcome(self.run, result)
        finally:
            self.run.unlock()

    # -------------------------------------------------------------------------------------------
    def _train(self) -> dict[str, Any]:
        spec, device = self.spec, self.device
        settings = spec_settings(spec)
        torch.manual_seed(derive_seed(spec["seed"], "global"))
        dataset = self.dataset
        self.reporter.message(f"loading {spec['dataset']} (decoded once, cached as uint8)")
        train = load_split(dataset, "train", self.cache_dir)
        test = load_split(dataset, "test", self.cache_dir)
        skipped = len(train.table.problems) + len(test.table.problems)
        if skipped:
            self.reporter.message(
                f"{skipped} rows of {spec['dataset']} were skipped or look odd; "
                f"`nlbench prepare --dataset {spec['dataset']} --data-root {spec['data_root']}` lists them"
            )
        noisy, realised = training_labels(dataset, train, spec)
        if not self.run.file(NOISY_LABELS).is_file():
            self.run.write_noisy_labels(noisy)

        labels = LabelStore(noisy, device)
        clean = torch.as_tensor(train.table.labels, device=device)
        test_labels = torch.as_tensor(test.table.labels, device=device)
        train_images = ImageCache(ImageCache.place(train.images, device, settings), device)
        test_images = ImageCache.place(test.images, device, settings)
        if device.type == "cuda":
            # Shapes are fixed (drop_last), so cuDNN's autotuning pays for itself after a few steps.
            torch.backends.cudnn.benchmark = True
        pipeline = settings.augmentation or dataset.augmentation
        channels_last = device.type == "cuda" and settings.channels_last
        augmenter = Augmenter(pipeline, settings.image_size, dataset.mean, dataset.std, device, channels_last)
        weights = None
        if settings.balanced_sampling:
            counts = np.bincount(noisy, minlength=dataset.num_classes).astype(np.float64)
            weights = torch.as_tensor(1.0 / counts[noisy], dtype=torch.float64)

        method_cls = self.registry.method(spec["method"])
        ctx = build_context(spec, dataset, labels, device)
        method = method_cls(method_cls.HParams(**spec["hparams"]))
        method.build(ctx)
        phases = method.phases()

        history: list[dict[str, Any]] = []
        start_phase, start_epoch, elapsed = 0, 0, 0.0
        if self.run.has_checkpoint():
            state = self.run.load_checkpoint()
            if state.get("run_id") != spec["run_id"]:
                raise UsageError(f"checkpoint in {self.run.path} belongs to another run; remove it or use --force.")
            method.load_state_dict(state["method"])
            labels.load_state_dict(state["labels"])
            history = state["history"]
            start_phase, start_epoch, elapsed = state["phase_index"], state["next_epoch"], state["elapsed"]
            self.run.write_metrics(history)
            self.reporter.message(f"resuming {self.run.path} at {phases[start_phase].name} epoch {start_epoch + 1}")
        else:
            self.run.write_metrics([])
        if self.hook is not None:
            self.hook.on_run_start(run=self.run)

        train_images_total, train_seconds = 0, 0.0
        final_predictions: dict[str, torch.Tensor] = {}
        for phase_index, phase in enumerate(phases):
            if phase_index < start_phase:
                continue
            first = start_epoch if phase_index == start_phase else 0
            method.start_phase(phase)
            _, steps = epoch_order(len(train), settings, torch.Generator(), weights)
            self.reporter.phase_start(phase.name, first, phase.epochs, steps)
            runner = EpochRunner(method, ctx, phase, augmenter, train_images, labels, clean, settings, weights)
            for epoch in range(first, phase.epochs):
                began = time.perf_counter()
                steps = runner.start(epoch)
                self.reporter.epoch_start(epoch)
                for _ in range(steps):
                    train_images_total += runner.step()
                    self.reporter.step()
                summary = runner.finish()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                trained = time.perf_counter() - began
                train_seconds += trained
                eval_began = time.perf_counter()
                predictions = predict_split(method, phase, test_images, augmenter, ctx, settings.eval_batch_size)
                test_acc = accuracies(predictions, test_labels)
                final_predictions = predictions
                seconds = time.perf_counter() - began
                elapsed += seconds
                record = {
                    "phase": phase.name, "epoch": epoch, "epochs": phase.epochs,
                    "lr": _first_lr(ctx, phase.name), "train": summary, "test": test_acc,
                    "seconds": seconds, "eval_seconds": time.perf_counter() - eval_began,
                    "train_images_per_s": steps * settings.batch_size / trained if trained > 0 else 0.0,
                }
                history.append(record)
                self.run.append_metrics(record)
                last_epoch = epoch + 1 == phase.epochs
                next_phase, next_epoch = (phase_index + 1, 0) if last_epoch else (phase_index, epoch + 1)
                self.run.save_checkpoint({
                    "run_id": spec["run_id"], "phase_index": next_phase, "next_epoch": next_epoch,
                    "method": method.state_dict(), "labels": labels.state_dict(), "history": history,
                    "elapsed": elapsed,
                })
                self.run.set_status("running", phase=phase.name, epoch=epoch + 1, epochs=phase.epochs)
                self.reporter.epoch_end(record)
                if self.hook is not None:
                    self.hook.on_epoch_end(run=self.run, record=record)

        if not final_predictions:  # resumed after the last epoch: predict once more for the report
            final_predictions = predict_split(method, phases[-1], test_images, augmenter, ctx, settings.eval_batch_size)
        matrix = confusion(final_predictions["model"], test_labels, dataset.num_classes)
        result = self._result(dataset, history, settings, realised, matrix, final_predictions, test_labels,
                              elapsed, train_images_total, train_seconds, method_cls)
        return result

    def _result(self, dataset: Dataset, history: list[dict[str, Any]], settings: TrainSettings, realised: float,
                matrix: np.ndarray, predictions: dict[str, torch.Tensor], test_labels: torch.Tensor,
                elapsed: float, images: int, train_seconds: float, method_cls: type[Method]) -> dict[str, Any]:
        spec = self.spec
        members = {
            name: per_class_report(confusion(pred, test_labels, dataset.num_classes), tuple(dataset.class_names))
            for name, pred in predictions.items() if name != "model"
        }
        result = {
            "run_id": spec["run_id"],
            "method": spec["method"],
            "dataset": spec["dataset"],
            "dataset_version": spec["dataset_version"],
            "dataset_options": spec["dataset_options"],
            "noise": {**spec["noise"], "realised_rate": realised},
            "seed": spec["seed"],
            **{f"hp_{k}": v for k, v in spec["hparams"].items()},
            "hparams": spec["hparams"],
            "train": spec["train"],
            "uses_noise_rate": bool(method_cls.uses_noise_rate),
            "pretrained": (
                {"sha256": spec["pretrained_sha256"], "path": spec["pretrained_path"]}
                if spec["pretrained_sha256"] else None
            ),
            "initialisation": "pretrained file" if spec["pretrained_sha256"] else "random",
            "metrics": summarise_history(history, settings.last_k),
            "final": {"model": per_class_report(matrix, tuple(dataset.class_names)), "members": members},
            "diagnostics": history[-1]["train"] if history else {},
            "selection_rule": "best = highest test accuracy over epochs (selected on the test set: optimistic)",
            "cost": {
                "seconds": elapsed,
                "train_images_per_s": images / train_seconds if train_seconds > 0 else None,
                "peak_memory_mb": peak_memory_mb(self.device),
            },
            "environment": describe_environment(self.device),
            "test_size": int(test_labels.numel()),
            "finished": time.time(),
        }
        return result


def _first_lr(ctx: Context, phase: str) -> float | None:
    for registered in ctx.optimizers:
        if registered.phase == phase:
            return float(registered.optimizer.param_groups[0]["lr"])
    return None
