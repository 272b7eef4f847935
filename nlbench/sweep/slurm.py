"""The submitit executors: ``slurm`` (one job array on a SLURM cluster) and ``submitit-local``.

A job that hits its time limit or is preempted requeues itself and resumes from its checkpoint
(:meth:`TrainTask.checkpoint`); meanwhile its run is ``interrupted`` (requeued), never
``failed``. The submitting process returns once the array is queued; ``nlbench status`` follows
it. Before submitting, the request (CPUs, GPUs, memory, time) is checked against what the
partition's nodes have (``sinfo``): SLURM would accept an impossible request and leave it pending
forever. ``submitit-local`` is submitit's local executor: the SLURM code path without a
scheduler. Both need ``pip install nlbench[slurm]``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nlbench.errors import StoppedWaiting, UsageError
from nlbench.executors import Executor, ExecutorOptions, RunReport
from nlbench.store import JOB_LOG_VARIABLE
from nlbench.sweep.worker import mark_queued, run_dir_of, train_one


class Requeued(KeyboardInterrupt):
    """SLURM is about to stop this job (time limit or preemption): leave the run interrupted, then requeue.

    A KeyboardInterrupt, so that the engine records the run as interrupted (resumable) exactly as
    for Ctrl-C, not as failed."""


class TrainTask:
    """The callable a submitit job runs: one run; requeued on timeout or preemption (submitit checkpointing)."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def __call__(self, spec_json: dict[str, Any]) -> RunReport:
        requeue = _take_requeue_signal()
        try:
            return train_one(spec_json, self.options, self.options.slurm_cpus, job_log=True)
        except Requeued as signalled:
            if requeue is None:  # pragma: no cover - only raised where a handler was taken over
                raise
            handler, signum = requeue
            try:
                handler(signum, None)  # submitit: checkpoint (below), `scontrol requeue`, exit
            except Exception as refused:  # submitit's UncompletedJobError: it timed out MAX_TIMEOUTS times
                _record_given_up(spec_json, self.options, refused)
                raise
            raise signalled
        except KeyboardInterrupt as stopped:  # scancel: the run is left resumable; say so in the log, briefly
            print(f"interrupted {spec_json.get('run_id')}: {stopped}; the sweep run again resumes it",
                  file=sys.stderr, flush=True)
            raise SystemExit(130) from None


    def checkpoint(self, spec_json: dict[str, Any]) -> Any:
        """Called by submitit before the job is killed: resubmit the same run, which resumes from its checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.options), spec_json)


def _record_given_up(spec_json: dict[str, Any], options: ExecutorOptions, refused: Exception) -> None:
    """The job will not be requeued again (it hit its time limit too often): say so in the run's
    status instead of the "requeued" that SLURM will never honour, and how to go on."""
    run = run_dir_of(spec_json, options)
    reason = str(refused).splitlines()[0] if str(refused) else type(refused).__name__
    message = (f"SLURM job stopped for good ({reason}, after {MAX_TIMEOUTS} requeues at most); run the sweep "
               f"again, with a longer --slurm-time (now {options.slurm_time_min} min), to resume from its checkpoint")
    run.set_status("interrupted", error=message, **run.reached())
    print(f"interrupted {spec_json.get('run_id')}: {message}", file=sys.stderr, flush=True)


def _take_requeue_signal() -> tuple[Any, int] | None:
    """In a submitit job, route its requeue signal through the engine first.

    submitit's handler checkpoints, requeues and calls ``sys.exit`` wherever the training happens
    to be, which the engine would record as a failed run. Instead the signal raises
    :class:`Requeued`: the engine stops as on Ctrl-C (status ``interrupted``, the last epoch's
    checkpoint kept) and :meth:`TrainTask.__call__` then hands over to submitit's handler. SIGTERM
    (``scancel``, a node going down) likewise leaves the run interrupted instead of killed mid-write.
    Returns submitit's handler and its signal, or None outside a submitit job.
    """
    try:
        import submitit
        from submitit.core.job_environment import JobEnvironment
    except ImportError:
        return None
    try:
        environment = submitit.JobEnvironment()
        signum = JobEnvironment._usr_sig()
    except RuntimeError:  # not in a submitit job
        return None
    handler = signal.getsignal(signum)
    if not callable(handler):
        return None
    os.environ[JOB_LOG_VARIABLE] = str(environment.paths.stderr)
    job = environment.job_id

    def requeue(signum: int, frame: Any) -> None:
        raise Requeued(f"SLURM job {job} is being requeued (time limit or preemption); "
                       "it resumes from its last checkpoint when SLURM starts it again")

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"SLURM job {job} received SIGTERM (scancel, preemption or node shutdown)")

    signal.signal(signum, requeue)
    signal.signal(signal.SIGTERM, terminate)
    return handler, signum


@dataclass
class Partition:
    """What the largest node of one SLURM partition offers, from ``sinfo``."""

    name: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int
    time_limit_min: int | None  # None: no limit


def parse_sinfo(text: str) -> list[Partition]:
    """Parse ``sinfo -h -e -o '%P|%c|%m|%G|%l'`` (one line per partition and node kind) into partitions."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, cpus, memory, gres, limit = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        node = Partition(name, default, _leading_int(cpus), _leading_int(memory), _gpus_in_gres(gres),
                         _minutes(limit))
        old = found.get(name)
        if old is None:
            found[name] = node
        else:  # several node kinds: what the largest of them offers
            found[name] = Partition(name, old.default or default, max(old.cpus, node.cpus),
                                    max(old.memory_mb, node.memory_mb), max(old.gpus, node.gpus), old.time_limit_min)
    return list(found.values())


def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _gpus_in_gres(gres: str) -> int:
    """GPUs per node in a GRES field such as ``gpu:4``, ``gpu:a100:8(S:0-1)`` or ``(null)``."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _minutes(limit: str) -> int | None:
    """SLURM's time format (``infinite``, ``30``, ``4:00:00``, ``1-00:00:00``) in minutes."""
    limit = limit.strip()
    if not limit or limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def check_request(partitions: list[Partition], options: ExecutorOptions) -> None:
    """Refuse, before submitting, a request no node of the partition can satisfy (SLURM would queue it forever)."""
    if not partitions:
        raise UsageError("sinfo lists no SLURM partition: is this machine part of a cluster?")
    if options.slurm_partition:
        chosen = [p for p in partitions if p.name == options.slurm_partition]
        if not chosen:
            raise UsageError(f"--slurm-partition {options.slurm_partition}: no such partition; sinfo lists "
                             f"{', '.join(p.name for p in partitions)}.")
    else:
        chosen = [p for p in partitions if p.default]
        if not chosen:
            raise UsageError(f"the cluster has no default partition: choose one with --slurm-partition "
                             f"({', '.join(p.name for p in partitions)}).")
    part = chosen[0]
    asked = []
    cpus = options.slurm_cpus or DEFAULT_CPUS
    if cpus > part.cpus:
        asked.append(f"{cpus} CPUs (--slurm-cpus) but its largest node has {part.cpus}")
    if options.slurm_gpus > part.gpus:
        asked.append(f"{options.slurm_gpus} GPUs (--slurm-gpus) but its nodes have {part.gpus or 'none'}")
    if options.slurm_mem_gb and options.slurm_mem_gb * 1024 > part.memory_mb:
        asked.append(f"{options.slurm_mem_gb} GB (--slurm-mem) but its largest node has {part.memory_mb // 1024} GB")
    if part.time_limit_min is not None and options.slurm_time_min > part.time_limit_min:
        asked.append(f"{options.slurm_time_min} min (--slurm-time) but its time limit is {part.time_limit_min} min")
    if asked:
        raise UsageError(f"partition {part.name} cannot run these jobs: asked for " + "; ".join(asked)
                         + ". SLURM would accept them and leave them pending forever; ask for less.")


def check_partition(options: ExecutorOptions) -> None:
    """Ask ``sinfo`` what the partition offers and :func:`check_request` against it."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise UsageError("--executor slurm needs SLURM's commands (sbatch, sinfo) on this machine's PATH.")
    try:
        listing = subprocess.run(["sinfo", "-h", "-e", "-o", "%P|%c|%m|%G|%l"], capture_output=True, text=True,
                                 timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise UsageError(f"sinfo failed, so the cluster cannot be asked what it offers: {detail.strip()}") from None
    check_request(parse_sinfo(listing), options)


#: CPUs per SLURM job when --slurm-cpus is not given.
DEFAULT_CPUS = 4
#: How many time-outs a job may be requeued after (submitit gives up after this many).
MAX_TIMEOUTS = 20


def signal_delay_s(time_limit_min: int) -> int:
    """Seconds before the time limit at which SLURM warns a job (submitit's 90 s, less for short jobs).

    A job must still get useful work done before the warning: with a 1-minute limit, a 90-second
    warning would come at once and requeue the job forever."""
    return max(10, min(90, time_limit_min * 60 // 4))


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
        # A run resumes from its checkpoint after each requeue, so it may be requeued more often than
        # submitit's default of 3 time-outs: a run longer than 4 time limits would end unfinished.
        extra = {"slurm_max_num_timeout": MAX_TIMEOUTS} if self.cluster == "slurm" else {}
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster, **extra)
        opts = self.options
        parameters: dict[str, Any] = {"timeout_min": opts.slurm_time_min, "name": "nlbench"}
        if self.cluster == "slurm":
            check_partition(opts)
            parameters.update(slurm_array_parallelism=opts.jobs or 64, gpus_per_node=opts.slurm_gpus,
                              cpus_per_task=opts.slurm_cpus or DEFAULT_CPUS,
                              slurm_signal_delay_s=signal_delay_s(opts.slurm_time_min))
            if opts.slurm_mem_gb:
                parameters["mem_gb"] = opts.slurm_mem_gb
            if opts.slurm_partition:
                parameters["slurm_partition"] = opts.slurm_partition
        executor.update_parameters(**parameters)
        wait = opts.wait if opts.wait is not None else self.cluster != "slurm"
        mark_queued(specs, opts)
        if self.cluster == "slurm":
            jobs = executor.map_array(TrainTask(opts), specs)
            mark_queued(specs, opts, [job.job_id for job in jobs])
            array = jobs[0].job_id.split("_")[0]
            reporter.message(f"submitted {len(jobs)} runs as SLURM job array {array}; "
                             f"logs in {folder / array}; follow with `nlbench status --runs-dir {opts.runs_dir}`")
            if not wait:
                return [RunReport(spec["run_id"], "submitted", "", f"job {job.job_id}") for spec, job in zip(specs, jobs)]
            try:
                return [self._result(job, spec, reporter) for spec, job in zip(specs, jobs)]
            except KeyboardInterrupt:
                raise StoppedWaiting(
                    f"stopped waiting; the jobs of SLURM array {array} keep running. Follow them with "
                    f"`nlbench status --runs-dir {opts.runs_dir}` (or squeue); cancel them with `scancel {array}` "
                    "(their runs are left resumable).") from None
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

    def _result(self, job: Any, spec: dict[str, Any], reporter: Any) -> RunReport:
        try:
            report = job.result()
        except Exception as err:  # the job itself ended early (scancel, killed, out of memory): its log says why
            report = RunReport(spec["run_id"], "failed", "", f"job {job.job_id}: {str(err).splitlines()[-1][:200]}")
            run = self._run_dir(spec)
            state = run.state()
            if state.state in ("interrupted", "todo"):  # cancelled (perhaps before it started), not broken
                report = RunReport(spec["run_id"], "interrupted", str(run.path), f"job {job.job_id}: "
                                   f"{state.detail or 'stopped'}")
        tail = f": {report.error}" if report.error else (f" ({report.resumed})" if report.resumed else "")
        reporter.message(f"{report.outcome} {report.run_id} {report.path}{tail} (job {job.job_id})")
        return report


    def _run_dir(self, spec: dict[str, Any]) -> Any:
        return run_dir_of(spec, self.options)


class SubmititLocalExecutor(SubmititExecutor):
    """submitit's local executor: the cluster code path on this machine."""

    name = "submitit-local"
    summary = "submitit's local executor: the SLURM code path without a scheduler, --jobs at once"
    cluster = "local"
