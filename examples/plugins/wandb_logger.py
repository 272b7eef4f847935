"""An nlbench logger plugin for Weights & Biases: ``--logger wandb``.

Every run becomes a W&B run named by its run id, with the run's spec as its config and one
``wandb.log`` per epoch (the scalars of :func:`nlbench.loggers.epoch_scalars`, at the epoch counted
from 1 across the run's phases). To use it, ``pip install wandb``, ``wandb login``, and list this
file's folder in benchmark.toml::

    [plugins]
    paths = ["examples/plugins"]

then ``nlbench run --logger wandb`` (or ``nlbench sweep --logger wandb``). The project is
``$WANDB_PROJECT``, else "nlbench". An MLflow logger is the same file with ``mlflow.start_run``,
``mlflow.log_metrics(scalars, step=...)`` and ``mlflow.end_run``.
"""

from __future__ import annotations

import os
from typing import Any

import nlbench
from nlbench.loggers import Logger, epoch_scalars


class WandbLogger(Logger):
    """Sends each run's spec and per-epoch scalars to Weights & Biases."""

    name = "wandb"
    summary = "per-epoch curves to Weights & Biases (pip install wandb)"

    def __init__(self) -> None:
        try:
            import wandb
        except ImportError:
            raise nlbench.UsageError("--logger wandb needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        self.active: Any = None
        self.step = 0

    @nlbench.hookimpl
    def on_run_start(self, run: Any) -> None:
        spec = run.read_json("spec.json")
        self.step = len(run.read_metrics()[0])  # a resumed run goes on from its checkpoint's epoch
        self.active = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "nlbench"), name=spec["run_id"],
                                      config=spec)

    @nlbench.hookimpl
    def on_epoch_end(self, run: Any, record: dict) -> None:
        if self.active is not None:
            self.step += 1
            self.wandb.log(epoch_scalars(record), step=self.step)

    @nlbench.hookimpl
    def on_run_end(self, run: Any, result: dict | None, error: BaseException | None) -> None:
        if self.active is not None:
            self.wandb.finish(exit_code=0 if error is None else 1)
            self.active = None


@nlbench.hookimpl
def register_loggers(register: Any) -> None:
    register(WandbLogger)
