"""The engine: runs one spec from its assembly to result.json, resuming from its checkpoint.

:meth:`Engine.execute` skips a finished run, assembles the run (:func:`nlbench.train.assemble.assemble`,
before any run folder exists, so bad data is a usage error that leaves nothing behind), takes the
run's lock and trains phase by phase with :class:`nlbench.train.epoch.EpochRunner`. After every epoch:
evaluation on the test set, one line in metrics.jsonl and an atomic checkpoint. Every random
draw derives from (seed, phase, epoch) (:mod:`nlbench.seeding`), so a resumed run follows the
same path as an uninterrupted one. result.json is written last, by atomic rename.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlbench.context import Context
from nlbench.errors import RunFailed, RunStopped, UsageError
from nlbench.fileio import read_json_or_none
from nlbench.progress import Reporter
from nlbench.registry import Registry
from nlbench.result import Result, read_result
from nlbench.spec.runspec import RunSpec
from nlbench.store import NOISY_LABELS, RESULT, SAMPLE_LABELS, RunDir, run_dir_name, sample_file
from nlbench.train.assemble import Assembly, assemble
from nlbench.train.epoch import EpochRunner, epoch_order, label_dtype, score_name
from nlbench.train.evaluate import accuracies, predict_split, predict_with_confidence, scores
from nlbench.train.result import build_result


@dataclass
class Outcome:
    """What ``nlbench run`` reports: the result, where it is, and whether it was already done."""

    run_dir: RunDir
    result: dict[str, Any]
    skipped: bool = False
    #: How this attempt began when an earlier one had started: "resumed at train epoch 4" (from
    #: its checkpoint) or "restarted (no checkpoint)"; None for a first attempt.
    resumed: str | None = None


class Engine:
    """Trains one run; see the module docstring for the flow."""

    def __init__(self, spec: RunSpec, registry: Registry, runs_dir: Path, reporter: Reporter,
                 device: torch.device | None = None) -> None:
        self.spec = spec
        self.registry = registry
        self.reporter = reporter
        self.device = device
        self.run = RunDir(Path(runs_dir) / run_dir_name(spec))
        self.hook = registry.manager.hook if registry.manager is not None else None
        self.resumed: str | None = None  # see Outcome.resumed

    def execute(self, force: bool = False, keep_checkpoint: bool = False) -> Outcome:
        """Run (or resume, or skip) the spec and return its outcome.

        A finished run keeps ``model.pt`` (the deployable weights) and drops its resumable
        checkpoint unless ``keep_checkpoint``. "Done" is checked again once the run's lock is held
        (another process may have finished it meanwhile), and ``force`` retrains a finished run in
        a hidden folder beside it that replaces it only once the new result exists: a killed or
        failed ``--force`` leaves the finished run as it was.
        """
        self.run.finish_interrupted_swap()
        if self.run.is_done() and not force:
            return Outcome(self.run, read_result(self.run.file(RESULT)), skipped=True)
        if self.run.has_damaged_result() and not force:
            foreign = self.run.foreign_result(read_json_or_none(self.run.file(RESULT)))
            raise UsageError(f"{self.run.file(RESULT)} is damaged ({foreign or 'not a complete result'}); "
                             f"train the run again with --force, or delete its folder.")
        run = assemble(self.spec, self.registry, device=self.device, reporter=self.reporter)
        self.run.lock()
        try:
            if self.run.is_done() and not force:  # finished by another process while this one assembled
                return Outcome(self.run, read_result(self.run.file(RESULT)), skipped=True)
            leftovers = self.run.remove_leftover_temp_files()  # we hold the lock: their writer is dead
            if leftovers:
                self.reporter.message(f"removed {len(leftovers)} partial file(s) left by a killed attempt "
                                      f"in {self.run.path}: {', '.join(p.name for p in leftovers)}")
            self.run.aside().discard()  # a --force attempt killed earlier: we hold the lock, it is dead
            target = self.run
            if force and self.run.is_done():
                target = self.run.aside()
                target.path.mkdir(parents=True)
            elif force:
                self.run.clear()
            try:
                result = self._attempt(run, target, keep_checkpoint)
            except BaseException as err:
                if target is not self.run:
                    target.discard()  # the finished run was never touched
                if self.hook is not None:
                    self.hook.on_run_end(run=self.run, result=None, error=err)
                raise
            if target is not self.run:
                self.run.replace_with(target)
            if self.hook is not None:
                self.hook.on_run_end(run=self.run, result=result, error=None)
            return Outcome(self.run, result, resumed=self.resumed)
        finally:
            self.run.unlock()

    def _attempt(self, run: Assembly, store: RunDir, keep_checkpoint: bool) -> Result:
        """Train into ``store`` (the run's folder, or the folder a ``--force`` retrains in) up to its result."""
        store.write_spec(self.spec.to_json())
        began_before = "phase" in store.reached()  # an earlier attempt got as far as training
        store.set_status("running", started=time.time())
        threads = torch.get_num_threads()  # a resumed run may switch to the count it began with
        try:
            try:
                result = self._train(run, store)
                if self.resumed is None and began_before:  # _train found no checkpoint to resume from
                    self.resumed = "restarted (no checkpoint)"
            except SystemExit as exit_:  # a plugin called sys.exit: its run failed, nlbench does not exit
                raise RunFailed(f"method {self.spec.method!r} called sys.exit({exit_.code!r}) while training") from None
        except BaseException as err:
            state = "interrupted" if isinstance(err, (KeyboardInterrupt, RunStopped)) else "failed"
            # where it stopped, for `nlbench status`
            store.set_status(state, error=f"{type(err).__name__}: {err}", **store.reached())
            raise
        finally:
            torch.set_num_threads(threads)
        store.save_model({"method": self.spec.method, "run_id": self.spec.run_id,
                          "weights": run.method.deployable_state()})
        store.write_result(result)
        store.set_status("done", finished=time.time())
        if not keep_checkpoint:
            store.delete_checkpoint()
        return result

    # -------------------------------------------------------------------------------------------
    def _train(self, run: Assembly, store: RunDir) -> Result:
        spec, device, method, ctx = self.spec, run.device, run.method, run.ctx
        settings = spec.train
        if not store.file(NOISY_LABELS).is_file():
            store.write_noisy_labels(run.noisy)
        if not store.file(SAMPLE_LABELS).is_file():
            store.write_npz(SAMPLE_LABELS, _sample_labels(run))
        phases = method.phases()

        history: list[dict[str, Any]] = []
        start_phase, start_epoch, elapsed, attempts = 0, 0, 0.0, 1
        if store.has_checkpoint():
            state = store.load_checkpoint()
            if state.get("run_id") != spec.run_id:
                raise UsageError(f"checkpoint in {store.path} belongs to another run; remove it or use --force.")
            method.load_state_dict(state["method"])
            run.labels.load_state_dict(state["labels"])
            history = state["history"]
            start_phase, start_epoch, elapsed = state["phase_index"], state["next_epoch"], state["elapsed"]
            attempts = int(state.get("attempts", 1)) + 1
            began_with, threads = state.get("threads"), torch.get_num_threads()
            if device.type == "cpu" and isinstance(began_with, int) and began_with != threads:
                # CPU kernels split their sums by thread: another count changes the last digits.
                torch.set_num_threads(began_with)
                self.reporter.message(f"resuming with {began_with} CPU thread(s) as the run began (this process had "
                                      f"{threads}), so its numbers match an uninterrupted run")
            store.write_metrics(history)
            if start_phase < len(phases):
                self.resumed = f"resumed at {phases[start_phase].name} epoch {start_epoch + 1}"
                self.reporter.message(f"resuming {store.path} at {phases[start_phase].name} epoch {start_epoch + 1}")
        else:
            store.write_metrics([])
        # Sample records of epochs after the checkpoint are trained again: the files follow the history.
        store.prune_samples({sample_file(r["phase"], r["epoch"]) for r in history})
        if self.hook is not None:
            self.hook.on_run_start(run=store)

        train_images_total, train_seconds = 0, 0.0
        last_saved = time.perf_counter()  # checkpoint_interval counts from the start of this attempt
        final_predictions: dict[str, torch.Tensor] = {}
        for phase_index, phase in enumerate(phases):
            if phase_index < start_phase:
                continue
            first = start_epoch if phase_index == start_phase else 0
            method.start_phase(phase)
            runner = EpochRunner(method, ctx, phase, run.augmenter, run.train_images, run.labels, run.clean,
                                 settings, run.weights)
            _, steps = epoch_order(runner.n, runner.settings, torch.Generator(), run.weights)
            self.reporter.phase_start(phase.name, first, phase.epochs, steps)
            store.set_status("running", phase=phase.name, epoch=first, epochs=phase.epochs)  # for `status`
            for epoch in range(first, phase.epochs):
                began = time.perf_counter()
                steps = runner.start(epoch)
                self.reporter.epoch_start(epoch, steps)
                for _ in range(steps):
                    train_images_total += runner.step()
                    self.reporter.step()
                summary = runner.finish()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                trained = time.perf_counter() - began
                train_seconds += trained
                eval_began = time.perf_counter()
                predictions, confidences = predict_with_confidence(method, phase, run.test_images, run.augmenter,
                                                                   ctx, settings.eval_batch_size)
                test_acc = accuracies(predictions, run.test_labels)
                test_scores = scores(predictions, run.test_labels, run.dataset.num_classes, confidences)
                final_predictions = predictions
                val: dict[str, Any] = {}
                if run.val_labels.numel():
                    held = predict_split(method, phase, run.val_images, run.augmenter, ctx,
                                         settings.eval_batch_size)
                    val = {"val": accuracies(held, run.val_labels),
                           "val_clean": accuracies(held, run.val_clean)}
                seconds = time.perf_counter() - began
                elapsed += seconds
                record = {
                    "phase": phase.name, "epoch": epoch, "epochs": phase.epochs,
                    "lr": _first_lr(ctx, phase.name), "train": summary, "test": test_acc,
                    "test_scores": test_scores, **val,
                    "seconds": seconds, "eval_seconds": time.perf_counter() - eval_began,
                    "train_images_per_s": steps * runner.settings.batch_size / trained if trained > 0 else 0.0,
                }
                history.append(record)
                store.append_metrics(record)
                if runner.samples is not None:
                    store.write_npz(sample_file(phase.name, epoch), runner.samples)
                last_epoch = epoch + 1 == phase.epochs
                next_phase, next_epoch = (phase_index + 1, 0) if last_epoch else (phase_index, epoch + 1)
                if last_epoch or time.perf_counter() - last_saved >= settings.checkpoint_interval:
                    store.save_checkpoint({
                        "run_id": spec.run_id, "phase_index": next_phase, "next_epoch": next_epoch,
                        "method": method.state_dict(), "labels": run.labels.state_dict(), "history": history,
                        "elapsed": elapsed, "attempts": attempts, "threads": torch.get_num_threads(),
                    })
                    last_saved = time.perf_counter()
                store.set_status("running", phase=phase.name, epoch=epoch + 1, epochs=phase.epochs)
                self.reporter.epoch_end(record)
                if self.hook is not None:
                    self.hook.on_epoch_end(run=store, record=record)

        if not final_predictions:  # resumed after the last epoch: predict once more for the report
            final_predictions = predict_split(method, phases[-1], run.test_images, run.augmenter, ctx,
                                              settings.eval_batch_size)
        return self._result(run, history, final_predictions, elapsed, train_images_total, train_seconds, attempts)

    def _result(self, run: Assembly, history: list[dict[str, Any]], predictions: dict[str, torch.Tensor],
                elapsed: float, images: int, train_seconds: float, attempts: int = 1) -> Result:
        cost = {"seconds": elapsed, "attempts": attempts,
                "train_images_per_s": images / train_seconds if train_seconds > 0 else None}
        return build_result(self.spec, self.registry.method(self.spec.method), run, history, predictions, cost)


def _sample_labels(run: Assembly) -> dict[str, np.ndarray]:
    """The per-run part of the sample record (``samples/labels.npz``), by training index: ``clean``
    and ``given`` labels, ``split_index`` (the sample's row in the dataset's training split),
    ``name`` (as noise files name samples: the path relative to the data root, or the reference),
    and the run's ``classes``, ``score_name`` and record ``version``."""
    from nlbench.data.noise_file import sample_names

    names = sample_names(run.train.table.refs, run.dataset.root)  # once per run, not per step
    dtype = label_dtype(run.dataset.num_classes)
    return {"version": np.array(1, dtype=np.int16),
            "clean": run.clean.to(dtype).cpu().numpy(), "given": run.labels.given.to(dtype).cpu().numpy(),
            "split_index": np.asarray(run.train_index, dtype=np.int64),
            "name": np.array(names, dtype=str).reshape(-1)[np.asarray(run.train_index, dtype=np.int64)],
            "classes": np.array(run.dataset.class_names, dtype=str),
            "score_name": np.array(score_name(run.method), dtype=str)}


def _first_lr(ctx: Context, phase: str) -> float | None:
    for registered in ctx.optimizers:
        if registered.phase == phase:
            return float(registered.optimizer.param_groups[0]["lr"])
    return None

