"""Executors: where the runs of a sweep train. The store is the single source of truth.

An executor only decides where and how many runs train at once; every run trains through the
same :func:`train_one` (a fresh :class:`nlbench.engine.Engine` on the spec), which resumes an
interrupted run, skips a done one, and reports a run whose lock another process holds as
trained elsewhere instead of failing the sweep. Built-in executors, registered through the
``register_executors`` hook like a site's own:

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
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nlbench.errors import UsageError
from nlbench.hookspecs import hookimpl


@dataclass
class ExecutorOptions:
    """What the sweep command passes to an executor."""

    jobs: int | None = None
    runs_dir: str = "runs"
    plugin_paths: list[str] = field(default_factory=list)
    keep_checkpoint: bool = False
    quiet: bool = False
    slurm_partition: str | None = None
    slurm_time_min: int = 240
    slurm_gpus: int = 0
    slurm_cpus: int | None = None
    #: Wait for the jobs to end (submitit executors; SLURM submits and returns by default).
    wait: bool | None = None


@dataclass
class RunReport:
    """How one run of a sweep ended: done, skipped (already done), locked (elsewhere) or failed."""

    run_id: str
    outcome: str
    path: str = ""
    error: str = ""


class Executor(abc.ABC):
    """Base class of executors: ``run(specs)`` trains them and says how each one ended."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    @abc.abstractmethod
    def run(self, specs: list[dict[str, Any]], reporter: Any) -> list[RunReport]:
        """Train every spec (as ``RunSpec.to_json()`` dicts); return one report per spec handed in."""


def train_one(spec_json: dict[str, Any], options: ExecutorOptions, threads: int | None = None) -> RunReport:
    """Train one run of a sweep in this process: the body every executor runs."""
    import torch

    from nlbench.engine import Engine
    from nlbench.errors import NlbenchError
    from nlbench.plugins import get_registry
    from nlbench.progress import make_reporter
    from nlbench.spec import RunSpec
    from nlbench.store import RunLocked

    if threads:
        torch.set_num_threads(threads)
    spec = RunSpec.from_json(spec_json)
    registry = get_registry([Path(p) for p in options.plugin_paths])
    reporter = make_reporter(options.quiet or threads is not None)  # workers: one line per epoch, no bars
    engine = Engine(spec, registry, Path(options.runs_dir), reporter)
    try:
        outcome = engine.execute(keep_checkpoint=options.keep_checkpoint)
    except RunLocked as err:
        return RunReport(spec.run_id, "locked", str(engine.run.path), str(err))
    except NlbenchError as err:
        return RunReport(spec.run_id, "failed", str(engine.run.path), str(err).splitlines()[0])
    except Exception as err:  # a bug in a plugin or in nlbench: the sweep goes on, the run says why
        return RunReport(spec.run_id, "failed", str(engine.run.path), f"{type(err).__name__}: {err}")
    finally:
        reporter.close()
    return RunReport(spec.run_id, "skipped" if outcome.skipped else "done", str(outcome.run_dir.path))


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - a broken CUDA install: run on the CPU
        return 0


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """CPU threads each of ``jobs`` workers may use so that together they never oversubscribe."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, jobs))


_WORKER: dict[str, Any] = {}


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM (what SLURM and `kill` send) like Ctrl-C: the run is left interrupted, resumable."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _die_with_parent() -> None:
    """Linux: have the kernel send this worker SIGTERM when the sweep's process dies (even by kill -9)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: an orphaned worker finishes its run, then exits
        pass


def _init_worker(gpus: Any, threads: int) -> None:
    """Pin a fresh worker process to one GPU (if any) and to its share of CPU threads."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt_on_sigterm()
    _die_with_parent()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    _WORKER["threads"] = threads


def _worker_train(spec_json: dict[str, Any], options: ExecutorOptions) -> RunReport:
    return train_one(spec_json, options, _WORKER.get("threads", 1))


class LocalExecutor(Executor):
    """Worker processes on this machine (see the module docstring)."""

    name = "local"
    summary = "worker processes on this machine, --jobs at once (default: one per GPU, or one using every core)"

    def run(self, specs: list[dict[str, Any]], reporter: Any) -> list[RunReport]:
        gpus = _cuda_count()
        jobs = self.options.jobs or max(1, gpus)
        if jobs == 1:  # in this process: no start-up cost, Ctrl-C as for `nlbench run`
            return [self._announce(reporter, train_one(spec, self.options)) for spec in specs]
        return self._pool(specs, jobs, gpus, reporter)

    def _announce(self, reporter: Any, report: RunReport) -> RunReport:
        tail = f": {report.error}" if report.error else ""
        reporter.message(f"{report.outcome} {report.run_id} {report.path}{tail}")
        return report

    def _pool(self, specs: list[dict[str, Any]], jobs: int, gpus: int, reporter: Any) -> list[RunReport]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked CUDA or thread state
        queue = None
        if gpus > 1:
            queue = context.Manager().Queue()
            for index in range(jobs):
                queue.put(index % gpus)
        threads = threads_per_job(jobs)
        reports: dict[str, RunReport] = {}
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                                   initargs=(queue, threads))
        futures = {pool.submit(_worker_train, spec, self.options): spec["run_id"] for spec in specs}
        try:
            for future in as_completed(futures):
                reports[futures[future]] = self._announce(reporter, future.result())
        except KeyboardInterrupt:
            # Workers started from a terminal got the SIGINT too; others are told here. Each marks
            # its run interrupted and exits; nothing is lost (the last checkpoint stays).
            for process in list(getattr(pool, "_processes", {}).values()):
                try:
                    os.kill(process.pid, signal.SIGINT)
                except OSError:
                    pass
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return [reports[spec["run_id"]] for spec in specs]


class TrainTask:
    """The callable a submitit job runs: one run; requeued on timeout or preemption (submitit checkpointing)."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def __call__(self, spec_json: dict[str, Any]) -> RunReport:
        return train_one(spec_json, self.options, self.options.slurm_cpus)

    def checkpoint(self, spec_json: dict[str, Any]) -> Any:
        """Called by submitit before the job is killed: resubmit the same run, which resumes from its checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.options), spec_json)


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UsageError("the slurm and submitit-local executors need submitit: pip install 'nlbench[slurm]'.") from None
    return submitit


class SubmititExecutor(Executor):
    """Runs as submitit jobs: one job array on SLURM, or local processes (the same code path)."""

    name = "slurm"
    summary = "one submitit job array on SLURM (--slurm-partition, --slurm-time, --slurm-gpus), requeued on timeout"
    cluster: ClassVar[str] = "slurm"

    def run(self, specs: list[dict[str, Any]], reporter: Any) -> list[RunReport]:
        submitit = _import_submitit()
        folder = Path(self.options.runs_dir) / ".submitit"
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        opts = self.options
        parameters: dict[str, Any] = {"timeout_min": opts.slurm_time_min, "name": "nlbench"}
        if self.cluster == "slurm":
            parameters.update(slurm_array_parallelism=opts.jobs or 64, gpus_per_node=opts.slurm_gpus,
                              cpus_per_task=opts.slurm_cpus or 4)
            if opts.slurm_partition:
                parameters["slurm_partition"] = opts.slurm_partition
        executor.update_parameters(**parameters)
        wait = opts.wait if opts.wait is not None else self.cluster != "slurm"
        if self.cluster == "slurm":
            jobs = executor.map_array(TrainTask(opts), specs)
            reporter.message(f"submitted {len(jobs)} runs as SLURM job array {jobs[0].job_id.split('_')[0]}; "
                             f"logs in {folder}; follow with `nlbench status --runs-dir {opts.runs_dir}`")
            if not wait:
                return [RunReport(spec["run_id"], "submitted", "", f"job {job.job_id}") for spec, job in zip(specs, jobs)]
            return [self._result(job, spec, reporter) for spec, job in zip(specs, jobs)]
        return self._throttled(executor, specs, reporter)

    def _throttled(self, executor: Any, specs: list[dict[str, Any]], reporter: Any) -> list[RunReport]:
        """Local jobs, at most ``--jobs`` at once (submitit's local executor has no concurrency cap)."""
        limit = max(1, self.options.jobs or 1)
        pending = list(specs)
        running: list[tuple[Any, dict[str, Any]]] = []
        reports: dict[str, RunReport] = {}
        try:
            while pending or running:
                while pending and len(running) < limit:
                    spec = pending.pop(0)
                    running.append((executor.submit(TrainTask(self.options), spec), spec))
                finished = [(job, spec) for job, spec in running if job.done()]
                for job, spec in finished:
                    running.remove((job, spec))
                    reports[spec["run_id"]] = self._result(job, spec, reporter)
                if not finished:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            for job, _ in running:
                job.cancel(check=False)
            raise
        return [reports[spec["run_id"]] for spec in specs]

    @staticmethod
    def _result(job: Any, spec: dict[str, Any], reporter: Any) -> RunReport:
        try:
            report = job.result()
        except Exception as err:  # the job itself died (killed, out of memory): its log says why
            report = RunReport(spec["run_id"], "failed", "", f"job {job.job_id}: {str(err).splitlines()[-1][:200]}")
        tail = f": {report.error}" if report.error else ""
        reporter.message(f"{report.outcome} {report.run_id} {report.path}{tail} (job {job.job_id})")
        return report


class SubmititLocalExecutor(SubmititExecutor):
    """submitit's local executor: the cluster code path on this machine."""

    name = "submitit-local"
    summary = "submitit's local executor: the SLURM code path without a scheduler, --jobs at once"
    cluster = "local"


@hookimpl
def register_executors(register: Any) -> None:
    """The built-in executors, registered like any plugin's."""
    register(LocalExecutor)
    register(SubmititExecutor)
    register(SubmititLocalExecutor)
