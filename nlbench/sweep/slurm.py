"""The submitit executors: ``slurm`` (one job array on a SLURM cluster) and ``submitit-local``.

A job that hits its time limit or is preempted requeues itself and resumes from its checkpoint
(:meth:`TrainTask.checkpoint`). The submitting process returns once the array is queued;
``nlbench status`` follows it. ``submitit-local`` is submitit's local executor: the SLURM code
path without a scheduler. Both need ``pip install nlbench[slurm]``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from nlbench.errors import UsageError
from nlbench.executors import Executor, ExecutorOptions, RunReport
from nlbench.sweep.worker import train_one


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
