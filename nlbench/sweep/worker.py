"""The body of one sweep run, and the process control of the workers that run it.

Every executor trains a run through :func:`train_one`: a fresh :class:`nlbench.train.engine.Engine`
on the spec, which resumes an interrupted run, skips a done one, and reports a run whose lock
another process holds as trained elsewhere instead of failing the sweep.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from nlbench.executors import ExecutorOptions, RunReport


def train_one(spec_json: dict[str, Any], options: ExecutorOptions, threads: int | None = None,
              job_log: bool = False, reporter: Any = None) -> RunReport:
    """Train one run of a sweep in this process: the body every executor runs.

    ``job_log``: stderr is the log of a cluster job, where nobody reads the sweep's own output:
    write a line per epoch there, and any failure (with the traceback of an unexpected error).
    ``reporter``: where the run's progress goes (the sweep's display); by default a cluster job
    writes its log and anything else stays quiet."""
    import torch

    from nlbench.errors import NlbenchError, RunStopped
    from nlbench.plugins import get_registry
    from nlbench.progress import make_reporter
    from nlbench.spec.runspec import RunSpec
    from nlbench.store import RunLocked
    from nlbench.train.engine import Engine

    if threads:
        torch.set_num_threads(threads)
    spec = RunSpec.from_json(spec_json)
    registry = get_registry([Path(p) for p in options.plugin_paths])
    if reporter is None:  # a cluster job writes its log; without a display, the sweep reports outcomes only
        reporter = make_reporter(not job_log and (options.quiet or threads is not None))
    if hasattr(reporter, "start"):
        reporter.start()
    engine = Engine(spec, registry, Path(options.runs_dir), reporter)
    observers = list((getattr(options, "observers", None) or {}).get(spec.run_id, []))
    try:
        # The sweep's --logger (absent from jobs an older nlbench queued); inside the try, so that a
        # node without the logger's package reports a failed run instead of killing its worker.
        registry.enable_loggers(getattr(options, "loggers", []))
        for observer in observers:
            registry.manager.register(observer)
        outcome = engine.execute(force=spec.run_id in options.force_ids, keep_checkpoint=options.keep_checkpoint)
    except RunLocked as err:
        return RunReport(spec.run_id, "locked", str(engine.run.path), str(err))
    except RunStopped as err:  # an observer stopped it on purpose (a pruned trial): resumable, not failed
        return RunReport(spec.run_id, "stopped", str(engine.run.path), str(err))
    except NlbenchError as err:
        if job_log:
            print(f"failed {spec.run_id} {engine.run.path}: {err}", file=sys.stderr, flush=True)
        return RunReport(spec.run_id, "failed", str(engine.run.path), str(err).splitlines()[0])
    except Exception as err:  # a bug in a plugin or in nlbench: the sweep goes on, the run says why
        if job_log:
            traceback.print_exc()
        return RunReport(spec.run_id, "failed", str(engine.run.path), f"{type(err).__name__}: {err}")
    finally:
        for observer in observers:
            if registry.manager.is_registered(observer):
                registry.manager.unregister(observer)
        reporter.close()
    return RunReport(spec.run_id, "skipped" if outcome.skipped else "done", str(outcome.run_dir.path),
                     resumed=outcome.resumed or "")


def run_dir_of(spec_json: dict[str, Any], options: ExecutorOptions) -> Any:
    """The store folder (a :class:`nlbench.store.RunDir`) of one run of the sweep."""
    from nlbench.spec.runspec import RunSpec
    from nlbench.store import RunDir, run_dir_name

    return RunDir(Path(options.runs_dir) / run_dir_name(RunSpec.from_json(spec_json)))


def mark_queued(specs: list[dict[str, Any]], options: ExecutorOptions, job_ids: list[str] | None = None) -> None:
    """Record the runs an executor is about to train as queued (with their SLURM job ids once
    known), so that `nlbench status` counts them to do while they wait for a worker or a node."""
    for index, spec in enumerate(specs):
        run = run_dir_of(spec, options)
        if not run.is_done():  # a done run retrained by --force keeps saying done until replaced
            run.mark_queued(spec, **({"slurm_job": job_ids[index]} if job_ids else {}))


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


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C in a worker: remember it was the user (not the pool stopping its workers after one
    died), then interrupt the run as Python's default handler does."""
    _WORKER["sigint"] = True
    raise KeyboardInterrupt


def _init_worker(gpus: Any, threads: int, stop: Any = None, events: Any = None) -> None:
    """Pin a fresh worker process to one GPU (if any) and to its share of CPU threads.

    ``stop``: the sweep's stop event (a ``multiprocessing.Event``), shared by every worker: set by
    the first worker stopped by Ctrl-C (or by the sweep), it keeps the others from starting a
    run that was already queued to them. ``events``: the queue of the sweep's progress display
    (None: quiet)."""
    signal.signal(signal.SIGINT, _on_sigint)
    _WORKER["stop"] = stop
    if events is not None:
        events.cancel_join_thread()  # exiting never waits on a display that stopped reading
        _WORKER["events"] = events
    interrupt_on_sigterm()
    _WORKER["parent"] = os.getppid()
    _die_with_parent()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    _WORKER["threads"] = threads


def _worker_train(spec_json: dict[str, Any], options: ExecutorOptions, label: str = "") -> RunReport:
    """One run in a pool worker. Interrupted (Ctrl-C, SIGTERM, the sweep's death), the worker has
    left its run resumable and exits at once: a worker waiting for more work from a sweep that is
    gone would block forever, holding its memory. The first worker stopped by Ctrl-C sets the stop
    event, so that no worker starts another run (the pool hands out queued runs before it sees a
    death). SIGTERM does not set it: the pool itself sends SIGTERM to the other workers when one
    was killed (out of memory), and the sweep then goes on in a fresh pool."""
    stop = _WORKER.get("stop")
    try:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        events = _WORKER.get("events")
        reporter = None
        if events is not None:
            from nlbench.progress import EventReporter

            reporter = EventReporter(events.put, label or spec_json["run_id"], os.getpid())
        return train_one(spec_json, options, _WORKER.get("threads", 1), reporter=reporter)
    except KeyboardInterrupt:
        if stop is not None and _WORKER.get("sigint"):
            stop.set()
        os._exit(130)
