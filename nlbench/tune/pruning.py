"""Pruning of tuning trials: a trial's run reports its noisy-validation accuracy after every
epoch to its Optuna trial, and stops when the study's pruner says the trial will not win.

The pruner is an observer of one run (:attr:`nlbench.executors.ExecutorOptions.observers`),
registered in whichever process trains it (this one, a pool worker or a SLURM job): it reads
the study from the store's journal file, so every executor prunes alike. A pruned run stops
through :class:`nlbench.errors.RunStopped`: left resumable, reported ``stopped``, never failed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from nlbench.errors import RunStopped
from nlbench.hookspecs import hookimpl

#: Pruners of ``nlbench tune --pruner``.
PRUNERS = ("median", "halving", "none")


def make_pruner(name: str, epochs: int) -> Any:
    """The Optuna pruner called ``name``: median (a trial stops when its accuracy after an epoch is
    below the median of the earlier trials' at that epoch, from the fourth trial on and after the
    first third of the epochs), halving (asynchronous successive halving) or none."""
    import optuna

    if name == "median":
        # Optuna judges from step n_warmup_steps on; steps are epochs from 1: the first third is spared.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 3) + 1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


@dataclass
class TrialPruner:
    """Reports one trial run's per-epoch noisy-validation accuracy and stops it when pruned.

    Picklable (names and numbers only): the study is opened lazily where the run trains."""

    journal: str
    study: str
    trial_id: int
    pruner: str
    epochs: int

    def _trial(self) -> Any:
        trial = getattr(self, "_live", None)
        if trial is None:
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            optuna.logging.set_verbosity(optuna.logging.ERROR)
            study = optuna.load_study(study_name=self.study, storage=JournalStorage(JournalFileBackend(self.journal)),
                                      pruner=make_pruner(self.pruner, self.epochs))
            trial = self._live = optuna.trial.Trial(study, self.trial_id)
        return trial

    @hookimpl
    def on_epoch_end(self, run: Any, record: dict) -> None:
        # Steps are the main phase's epochs from 1 (a later phase, such as CCT's distillation, is not
        # judged): the same step for the same epoch when a resumed run reports it again.
        value = (record.get("val") or {}).get("model")
        if record.get("phase", "train") != "train" or value is None:
            return
        step = int(record["epoch"]) + 1
        trial = self._trial()
        with warnings.catch_warnings():  # a resumed trial reports its first epochs again: Optuna keeps the first
            warnings.simplefilter("ignore")
            trial.report(float(value), step)
        if trial.should_prune():
            raise RunStopped(f"pruned by nlbench tune after epoch {step}: noisy-validation accuracy "
                             f"{value:.2f} is below what the study's {self.pruner} pruner keeps")
