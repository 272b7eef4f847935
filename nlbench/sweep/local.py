"""The ``local`` executor: worker processes on this machine, ``--jobs N`` at once.

CPU threads are split between the workers (N jobs never oversubscribe the cores); on a machine
with several GPUs each worker is pinned to its own GPU. Ctrl-C stops the workers, whose runs are
left resumable.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from nlbench.executors import Executor, RunReport
from nlbench.sweep.worker import _cuda_count, _init_worker, _worker_train, threads_per_job, train_one


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
