"""The ``local`` executor: worker processes on this machine, ``--jobs N`` at once.

CPU threads are split between the workers (N jobs never oversubscribe the cores); on a machine
with several GPUs each worker is pinned to its own GPU. Ctrl-C stops the workers, whose runs are
left resumable.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from nlbench.errors import RunFailed
from nlbench.executors import Executor, RunReport
from nlbench.sweep.worker import _cuda_count, _init_worker, _worker_train, mark_queued, run_dir_of, threads_per_job, train_one


class LocalExecutor(Executor):
    """Worker processes on this machine (see the module docstring)."""

    name = "local"
    summary = "worker processes on this machine, --jobs at once (default: one per GPU, or one using every core)"

    def run(self, specs: list[dict[str, Any]], reporter: Any) -> list[RunReport]:
        from nlbench.progress import EventReporter, SweepDisplay, run_labels

        gpus = _cuda_count()
        jobs = self.options.jobs or max(1, gpus)
        mark_queued(specs, self.options)
        self.labels = run_labels(specs)
        display = SweepDisplay(reporter.console, len(specs))
        try:
            if jobs == 1:  # in this process: no start-up cost, Ctrl-C as for `nlbench run`
                return [self._announce(display, train_one(
                    spec, self.options, reporter=EventReporter(display.handle, self.labels[spec["run_id"]], 0)))
                    for spec in specs]
            return self._pool(specs, jobs, gpus, display)
        finally:
            display.close()

    def _announce(self, display: Any, report: RunReport) -> RunReport:
        tail = f": {report.error}" if report.error else (f" ({report.resumed})" if report.resumed else "")
        display.run_finished(f"{report.outcome} {self.labels.get(report.run_id, report.run_id)} "
                             f"({report.run_id[:8]}){tail}")
        return report

    def _pool(self, specs: list[dict[str, Any]], jobs: int, gpus: int, display: Any) -> list[RunReport]:
        """Train ``specs`` in worker processes; a worker that dies (the OOM killer's SIGKILL) costs its
        own run only: it is reported and left resumable, and the others go on in a fresh pool."""
        reports: dict[str, RunReport] = {}
        pending = list(specs)
        while pending:
            if not self._pool_round(pending, jobs, gpus, display, reports):
                break
            pending = [spec for spec in pending if spec["run_id"] not in reports]
            lost = [spec for spec in pending if _worker_died(spec, self.options)]
            if not lost:
                raise RunFailed("a worker process of the sweep died and its run could not be told apart; "
                                "run the sweep again to resume what was interrupted.")
            for spec in lost:
                run = run_dir_of(spec, self.options)
                run.set_status("interrupted", error="its worker process was killed (signal 9: perhaps out of memory)")
                reports[spec["run_id"]] = self._announce(display, RunReport(
                    spec["run_id"], "failed", str(run.path),
                    "its worker process was killed (signal 9: perhaps out of memory); the run is left resumable: "
                    "run the sweep again (with fewer --jobs if memory is short)"))
            pending = [spec for spec in pending if spec["run_id"] not in reports]
        return [reports[spec["run_id"]] for spec in specs]

    def _pool_round(self, specs: list[dict[str, Any]], jobs: int, gpus: int, display: Any,
                    reports: dict[str, RunReport]) -> bool:
        """One pool over ``specs``, filling ``reports``; True when a worker died and broke the pool."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked CUDA or thread state
        queue = None
        if gpus > 1:
            queue = context.Manager().Queue()
            for index in range(jobs):
                queue.put(index % gpus)
        threads = threads_per_job(jobs)
        stop = context.Event()  # set on Ctrl-C, by the sweep or its first worker (see _worker_train)
        events = context.Queue()  # the workers' progress, drawn by the display on a listener thread
        listener = threading.Thread(target=_listen, args=(events, display), daemon=True)
        listener.start()
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                                   initargs=(queue, threads, stop, events))
        futures = {pool.submit(_worker_train, spec, self.options, self.labels[spec["run_id"]]): spec["run_id"]
                   for spec in specs}
        try:
            for future in as_completed(futures):
                try:
                    reports[futures[future]] = self._announce(display, future.result())
                except BrokenProcessPool:
                    # The pool stops every worker (SIGTERM: each leaves its run resumable).
                    _stop_quietly(pool)
                    if stop.is_set():  # a worker was interrupted (Ctrl-C reached the workers only)
                        raise KeyboardInterrupt from None
                    return True
        except KeyboardInterrupt:
            # Workers started from a terminal got the SIGINT too; others are told here. Each marks
            # its run interrupted and exits; nothing is lost (the last checkpoint stays), and the
            # stop event keeps a worker from starting a run that was queued to it.
            stop.set()
            for process in list((getattr(pool, "_processes", None) or {}).values()):  # None once shut down
                try:
                    os.kill(process.pid, signal.SIGINT)
                except OSError:
                    pass
            _stop_quietly(pool)
            raise
        finally:
            events.put(None)  # the listener drains what the workers sent, then stops
            listener.join(timeout=5)
        pool.shutdown(wait=True)
        return False


def _listen(events: Any, display: Any) -> None:
    """Hand the workers' progress events to the display until the sweep sends None."""
    while True:
        try:
            event = events.get()
        except (EOFError, OSError):  # the queue is gone
            return
        if event is None:
            return
        try:
            display.handle(event)
        except Exception:  # a drawing problem must never stop the sweep
            pass


def _stop_quietly(pool: Any) -> None:
    """Wait for the workers to leave their runs resumable; a second Ctrl-C meanwhile changes nothing
    (the sweep is stopping already, and cutting the wait short could leave a status half-written)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        pool.shutdown(wait=True, cancel_futures=True)
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_died(spec: dict[str, Any], options: Any) -> bool:
    """Whether the run's process died without a word: its status still says running, nobody holds its lock."""
    state = run_dir_of(spec, options).state()
    return state.state == "interrupted" and state.status.get("state") == "running"
