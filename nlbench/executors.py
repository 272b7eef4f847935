"""The executor contract: what a plugin implements to decide where the runs of a sweep train.

The store is the single source of truth. An executor only decides where and how many runs train
at once; every run trains through the same :func:`nlbench.sweep.worker.train_one` (a fresh
:class:`nlbench.train.engine.Engine` on the spec), which resumes an interrupted run, skips a done
one, and reports a run whose lock another process holds as trained elsewhere instead of failing
the sweep. Built-in executors, registered through the
``register_executors`` hook like a site's own (the built-in plugin folder ``executors/``):

- ``local``: worker processes on this machine, ``--jobs N`` at once; CPU threads are split
  between them (N jobs never oversubscribe the cores); on a machine with several GPUs each worker
  is pinned to its own GPU. Ctrl-C stops the workers, whose runs are left resumable.
- ``slurm``: one submitit job array on a SLURM cluster (``pip install nlbench[slurm]``); a job
  that hits its time limit or is preempted requeues itself and resumes from its checkpoint. The
  submitting process returns once the array is queued; ``nlbench status`` follows it.
- ``submitit-local``: submitit's local executor, the SLURM code path without a scheduler.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nlbench._lazy import lazy_attributes


@dataclass
class ExecutorOptions:
    """What the sweep command passes to an executor."""

    jobs: int | None = None
    runs_dir: str = "runs"
    plugin_paths: list[str] = field(default_factory=list)
    keep_checkpoint: bool = False
    #: Run ids to train again although done (``sweep --force``: those trained with other code).
    force_ids: list[str] = field(default_factory=list)
    quiet: bool = False
    slurm_partition: str | None = None
    slurm_time_min: int = 240
    slurm_gpus: int = 0
    slurm_cpus: int | None = None
    #: Memory per SLURM job, GB (None: the cluster's default).
    slurm_mem_gb: int | None = None
    #: Wait for the jobs to end (submitit executors; SLURM submits and returns by default).
    wait: bool | None = None
    #: Loggers every run of the sweep reports to (``--logger``; see :mod:`nlbench.loggers`).
    loggers: list[str] = field(default_factory=list)
    #: Observers of single runs: run id -> plugin objects (picklable) registered while that run
    #: trains, e.g. the pruner of a tuning trial (:mod:`nlbench.tune.pruning`).
    observers: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class RunReport:
    """How one run of a sweep ended: done, skipped (already done), locked (elsewhere) or failed."""

    run_id: str
    outcome: str
    path: str = ""
    error: str = ""
    #: For a run an earlier attempt had started: "resumed at train epoch 4" or "restarted (no checkpoint)".
    resumed: str = ""


class Executor(abc.ABC):
    """Base class of executors: ``run(specs)`` trains them and says how each one ended."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    @abc.abstractmethod
    def run(self, specs: list[dict[str, Any]], reporter: Any) -> list[RunReport]:
        """Train every spec (as ``RunSpec.to_json()`` dicts); return one report per spec handed in."""


#: The built-in executors and the worker's helpers, at their old paths for one release. Queued
#: SLURM jobs pickled ``nlbench.executors.TrainTask``; unpickling them looks the name up here.
__getattr__ = lazy_attributes(__name__, {
    "TrainTask": "nlbench.sweep.slurm", "SubmititExecutor": "nlbench.sweep.slurm",
    "SubmititLocalExecutor": "nlbench.sweep.slurm", "LocalExecutor": "nlbench.sweep.local",
    "train_one": "nlbench.sweep.worker", "threads_per_job": "nlbench.sweep.worker",
    "interrupt_on_sigterm": "nlbench.sweep.worker",
})
