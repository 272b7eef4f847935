"""The run store: one directory per run, written so that a crash never looks like a result.

Layout of ``<runs>/<dataset>/<method>/noise<rate>-<mode>/seed<seed>-<run_id>/``:

- ``spec.json``: the fully resolved run specification (its hash is the run id);
- ``status.json``: pending, running, done or failed (with the error, epoch and batch);
- ``metrics.jsonl``: one line per epoch and phase;
- ``noisy_labels.npy``: the noisy labels of the whole training split (the method trains on them
  minus the held-out validation images, which keep theirs);
- ``checkpoint.pt``: everything needed to resume, replaced atomically after every epoch, and
  deleted once the run is done (unless ``--keep-checkpoint``): it holds every network's optimiser
  state, hundreds of MB for CCT;
- ``model.pt``: the deployable model's weights (tensors only), written when the run is done;
- ``samples/``: the per-sample record (:mod:`nlbench.report.samples` reads it): ``labels.npz``
  once per run, and ``<phase>-epoch-<NNNN>.npz`` (1-based) after each epoch's metrics line;
- ``result.json``: written last by atomic rename; its presence means the run is done.

Files are created with the user's umask (a shared cluster filesystem lets colleagues read them),
and :meth:`RunDir.state` tells done, running, interrupted, failed and to-do apart from the files
and the run's lock alone, so ``nlbench status`` works from any machine that sees the store.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nlbench import fileio
from nlbench.errors import UsageError
from nlbench.fileio import FILE_MODE, json_default, read_json_or_none
from nlbench.result import DamagedResult, Result, is_result, parse_metrics, read_result


class RunLocked(UsageError):
    """Another process holds the lock of a run (it is being trained elsewhere)."""


@dataclass
class RunState:
    """A run's state as the store shows it, with its status.json and a one-line detail."""

    state: str  # todo | running | interrupted | failed | done
    status: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


if TYPE_CHECKING:  # pragma: no cover
    from nlbench.spec.runspec import RunSpec

try:  # POSIX advisory lock so two processes never train the same run at once
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

RESULT = "result.json"
SPEC = "spec.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
NOISY_LABELS = "noisy_labels.npy"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOCK = ".lock"
#: Folder of the per-sample record and its per-run file (clean and given labels, names, classes).
SAMPLES = "samples"
SAMPLE_LABELS = f"{SAMPLES}/labels.npz"
#: The columns of ``nlbench export --samples`` besides the method's score (whose name may not be one).
SAMPLE_COLUMNS = ("index", "image", "clean_label", "noisy_label", "epoch", "phase", "seen", "selected",
                  "label_used", "relabelled_to")


def sample_file(phase: str, epoch: int) -> str:
    """The per-sample record of 0-based ``epoch`` of ``phase``, relative to the run folder
    (numbered from 1 in the name, as the CLI prints epochs)."""
    return f"{SAMPLES}/{phase}-epoch-{epoch + 1:04d}.npz"


def run_dir_name(spec: RunSpec) -> Path:
    """Relative folder of a run: grouped by dataset, method and noise, so people can browse it."""
    noise = spec.noise
    label = f"noise{noise.rate:.2f}-{noise.mode if noise.source == 'injected' else noise.source}"
    return Path(spec.data.name) / spec.method / label / f"seed{spec.seed}-{spec.run_id}"


class RunDir:
    """One run's directory and the files in it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_handle: Any = None

    def file(self, name: str) -> Path:
        """Path of a file inside the run directory."""
        return self.path / name

    # -- state ------------------------------------------------------------------------------
    def is_done(self) -> bool:
        """A run is done exactly when its result.json holds a complete result of this folder's run."""
        value = read_json_or_none(self.file(RESULT))
        return is_result(value) and self.foreign_result(value) is None

    def foreign_result(self, result: Any) -> str | None:
        """Why ``result`` is not this folder's run (its spec.json names another run id), or None.

        A result.json copied from another run folder would otherwise be shown as this run's.
        """
        spec = read_json_or_none(self.file(SPEC))
        expected = spec.get("run_id") if isinstance(spec, dict) else None
        found = result.get("run_id") if isinstance(result, dict) else None
        if expected and found != expected:
            return f"its result.json is of run {found}, but its spec.json is of run {expected}"
        return None

    def has_damaged_result(self) -> bool:
        """Whether a result.json exists that is not a complete result (truncated, ``{}``, edited)."""
        return self.file(RESULT).exists() and not self.is_done()

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint to resume from exists."""
        return self.file(CHECKPOINT).is_file()

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run."""
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def set_status(self, state: str, **details: Any) -> None:
        """Record the run's state (queued, running, interrupted, done, failed) and details."""
        status = {"state": state, "updated": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
                  **scheduler_job()}
        status.update(details)
        fileio.atomic_write_json(self.file(STATUS), status)

    # -- writing ----------------------------------------------------------------------------
    def write_spec(self, spec: dict[str, Any]) -> None:
        """Write spec.json (atomically)."""
        fileio.atomic_write_json(self.file(SPEC), spec)

    def write_noisy_labels(self, labels: np.ndarray) -> None:
        """Store the training labels given to the method."""
        buffer = _npy_bytes(labels)
        fileio.atomic_write_bytes(self.file(NOISY_LABELS), buffer)

    def write_npz(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Write a compressed ``.npz`` atomically; the same arrays always give the same bytes (no
        timestamps in the zip), so a resumed run's files equal an uninterrupted run's."""
        fileio.atomic_write_bytes(self.file(name), _npz_bytes(arrays))

    def prune_samples(self, keep: set[str]) -> None:
        """Delete the per-epoch sample records other than ``keep`` (names as :func:`sample_file` gives
        them): epochs an interrupted attempt trained after its last checkpoint, trained again."""
        folder = self.file(SAMPLES)
        if folder.is_dir():
            for path in folder.glob("*-epoch-*.npz"):
                if f"{SAMPLES}/{path.name}" not in keep:
                    path.unlink(missing_ok=True)

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from the full history (used after resuming from a checkpoint)."""
        text = "".join(json.dumps(r, sort_keys=True, default=json_default) + "\n" for r in records)
        fileio.atomic_write_bytes(self.file(METRICS), text.encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's line to metrics.jsonl."""
        with open(self.file(METRICS), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=json_default) + "\n")

    def read_metrics(self) -> tuple[list[dict[str, Any]], int]:
        """The epoch records of metrics.jsonl (none if absent) and how many damaged lines were skipped.

        The one tolerant reader of the history: a torn last line (a crash mid-write), ``null`` or
        a line without the types of an epoch record is skipped (:func:`nlbench.result.parse_metrics`).
        """
        try:
            text = self.file(METRICS).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return [], 0
        return parse_metrics(text)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace checkpoint.pt atomically."""

        self._save_torch(state, CHECKPOINT)

    def save_model(self, state: dict[str, Any]) -> None:
        """Write model.pt: the deployable model's weights (tensors only)."""
        self._save_torch(state, MODEL)

    def delete_checkpoint(self) -> None:
        """Remove the resumable checkpoint of a finished run (and any partial ones)."""
        self.file(CHECKPOINT).unlink(missing_ok=True)
        for partial in self.path.glob(".checkpoint.*"):
            partial.unlink(missing_ok=True)

    def _save_torch(self, state: dict[str, Any], name: str) -> None:
        import torch  # only runs that train pay for importing torch, not `nlbench table`

        fd, tmp = tempfile.mkstemp(prefix=f".{Path(name).stem}.", dir=self.path)
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.file(name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self) -> dict[str, Any]:
        """Read checkpoint.pt (on the CPU) without running any code it may hold.

        ``weights_only=True``: a run folder copied from a colleague or a shared filesystem is data,
        and a pickle that asks to call anything (or a damaged file) is refused with what to do.
        """
        from nlbench.safe_load import UnreadableFile, load_tensors

        try:
            state = load_tensors(self.file(CHECKPOINT))
        except UnreadableFile as err:
            raise UsageError(
                f"cannot resume {self.path}: its checkpoint.pt cannot be loaded safely ({err}). "
                f"Delete the run folder, or train it again from scratch with --force."
            ) from None
        problem = _checkpoint_problem(state)
        if problem:
            raise UsageError(f"cannot resume {self.path}: its checkpoint.pt is not a checkpoint of this nlbench "
                             f"({problem}). Delete checkpoint.pt to start the run again, or use --force.")
        return state

    def write_result(self, result: dict[str, Any]) -> None:
        """Write result.json last, by atomic rename."""
        fileio.atomic_write_json(self.file(RESULT), result)

    def clear(self) -> None:
        """Remove the outputs of an earlier attempt (``--force``), keeping the folder."""
        for name in (RESULT, CHECKPOINT, MODEL, METRICS, STATUS, NOISY_LABELS):
            self.file(name).unlink(missing_ok=True)
        shutil.rmtree(self.file(SAMPLES), ignore_errors=True)

    # -- retraining a finished run (--force) --------------------------------------------------
    def aside(self) -> RunDir:
        """The hidden folder beside this one where ``--force`` retrains a finished run."""
        return RunDir(self.path.parent / f".{self.path.name}.force")

    def discard(self) -> None:
        """Delete this folder and everything in it (a ``--force`` attempt that will not finish)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def replace_with(self, other: RunDir) -> None:
        """Put ``other``'s folder in this one's place: two renames, then the old folder is deleted.

        A kill between the renames leaves no folder here, the old one and the new one beside it:
        :meth:`finish_interrupted_swap` completes the swap the next time the run is touched.
        """
        old = self._replaced()
        shutil.rmtree(old, ignore_errors=True)
        os.rename(self.path, old)
        os.rename(other.path, self.path)
        shutil.rmtree(old, ignore_errors=True)

    def finish_interrupted_swap(self) -> None:
        """Complete a :meth:`replace_with` that a kill cut between its two renames."""
        old = self._replaced()
        if self.path.exists() or not old.exists():
            return
        new = self.aside()
        os.rename(new.path if new.is_done() else old, self.path)
        shutil.rmtree(old, ignore_errors=True)

    def _replaced(self) -> Path:
        return self.path.parent / f".{self.path.name}.old"

    # -- locking ----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run's lock, or raise RunLocked if another process is training it."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.file(LOCK), "a+")
        os.chmod(self.file(LOCK), FILE_MODE)
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                handle.close()
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLocked(f"run {self.path} is being trained by another process; wait for it or stop it.") \
                        from None
                raise UsageError(
                    f"the filesystem of {self.path} does not support file locks ({os.strerror(err.errno)}), so "
                    "nlbench cannot keep two processes from training the same run; put --runs-dir on a local or "
                    "lock-capable filesystem."
                ) from None
        self._lock_handle = handle

    def is_locked(self) -> bool:
        """Whether another process holds the run's lock (is training it) right now."""
        if fcntl is None or not self.file(LOCK).is_file():
            return False
        try:
            with open(self.file(LOCK), "a+") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                return False
        except OSError:
            return False

    def state(self) -> RunState:
        """What the files say about this run: done, running, interrupted, failed or todo."""
        if not self.path.is_dir():
            return RunState("todo")
        if self.is_done():
            return RunState("done")
        status = read_json_or_none(self.file(STATUS))
        status = status if isinstance(status, dict) else {}
        state = status.get("state")
        error = str(status.get("error") or "")
        first_line = error.splitlines()[0] if error else ""
        if state == "failed":
            return RunState("failed", status, first_line)
        if state == "running":
            if self.is_locked():
                return RunState("running", status)
            # "running" but nobody holds the lock: the process died (kill -9, a lost node).
            leftovers = self.leftover_temp_files()
            extra = f"; {len(leftovers)} partial file(s) it was writing, removed when it resumes" if leftovers else ""
            return RunState("interrupted", status, "its process is gone" + extra)
        if state == "interrupted":
            return RunState("interrupted", status, first_line)
        if state == "queued":  # handed to a worker or a SLURM job that has not started it yet
            if self.is_locked():  # it started in the moment since: the lock is the truth
                return RunState("running", status)
            job = f" as SLURM job {status['slurm_job']}" if status.get("slurm_job") else ""
            return RunState("todo", status, f"queued{job}, not started")
        if self.file(CHECKPOINT).is_file() or self.file(SPEC).is_file():
            return RunState("interrupted", status, "started, never finished")
        return RunState("todo", status)

    def mark_queued(self, spec: dict[str, Any], **details: Any) -> None:
        """Record that a sweep handed this run to a worker or a job: `status` counts it to do, not
        absent. Where it stopped before (phase, epoch) is kept; a run that started meanwhile
        (its lock is held) is left alone."""
        if self.is_locked():
            return
        previous = read_json_or_none(self.file(STATUS))
        if isinstance(previous, dict) and previous.get("state") == "running":  # started meanwhile, or died:
            return  # its own status says more than "queued"
        reached = self.reached()
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.file(SPEC).is_file():
            self.write_spec(spec)
        self.set_status("queued", **reached, **details)

    def reached(self) -> dict[str, Any]:
        """Where the run's status says it got to (phase, epoch, epochs): kept when the state changes."""
        status = read_json_or_none(self.file(STATUS))
        return {k: v for k, v in status.items() if k in ("phase", "epoch", "epochs")} if isinstance(status, dict) else {}

    def leftover_temp_files(self) -> list[Path]:
        """Partial files of an atomic write that never finished (``.checkpoint.pt.XXXX``: the
        writer was killed between creating and renaming them)."""
        if not self.path.is_dir():
            return []
        names = (CHECKPOINT, MODEL, RESULT, STATUS, SPEC, METRICS, NOISY_LABELS)
        found = [p for p in self.path.iterdir() if p.is_file() and any(p.name.startswith(f".{name}.") for name in names)]
        if self.file(SAMPLES).is_dir():  # a sample record's partial file: ".train-epoch-0003.npz.XXXX"
            found += [p for p in self.file(SAMPLES).iterdir() if p.is_file() and p.name.startswith(".")]
        return sorted(found)

    def remove_leftover_temp_files(self) -> list[Path]:
        """Delete :meth:`leftover_temp_files` (call with the lock held: no writer is alive)."""
        found = self.leftover_temp_files()
        for path in found:
            path.unlink(missing_ok=True)
        return found

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock`."""
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None


#: What a checkpoint holds (Engine._train writes it) and the type of each entry.
CHECKPOINT_KEYS = {"run_id": str, "phase_index": int, "next_epoch": int, "method": dict, "labels": dict,
                   "history": list, "elapsed": (int, float)}


#: Set by an executor in the process of a cluster job: the job's log file, recorded in status.json.
JOB_LOG_VARIABLE = "NLBENCH_JOB_LOG"


def scheduler_job() -> dict[str, str]:
    """The SLURM job this process runs in (``12_3`` for task 3 of array 12) and its log, if any."""
    env = os.environ
    job: dict[str, str] = {}
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job["slurm_job"] = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    elif env.get("SLURM_JOB_ID"):
        job["slurm_job"] = env["SLURM_JOB_ID"]
    if env.get(JOB_LOG_VARIABLE):
        job["log"] = env[JOB_LOG_VARIABLE]
    return job


def _checkpoint_problem(state: Any) -> str | None:
    """Why a loaded checkpoint cannot be resumed from (its structure), or None."""
    if not isinstance(state, dict):
        return f"it holds {type(state).__name__}, not a dict"
    for key, kind in CHECKPOINT_KEYS.items():
        if key not in state:
            return f"it lacks {key!r}"
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            return f"its {key!r} is {type(state[key]).__name__}"
    if not {"current", "changes"} <= set(state["labels"]):
        return "its 'labels' lack 'current' or 'changes'"
    if not all(isinstance(record, dict) for record in state["history"]):
        return "its 'history' holds something other than epoch records"
    return None


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed``'s format with a fixed date in every zip entry (numpy stamps the clock)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            array = io.BytesIO()
            np.save(array, np.asarray(arrays[key]), allow_pickle=False)  # data only, never objects
            archive.writestr(entry, array.getvalue())
    return buffer.getvalue()


def iter_results(root: Path, damaged: list[Path] | None = None) -> Iterator[tuple[Path, Result]]:
    """Every finished run under ``root``: (run folder, checked result).

    A result.json that is not a complete result (truncated, ``{}``, ``null``, a string where a
    number belongs, edited by hand) is skipped and appended to ``damaged``, so a reader can say
    which files it left out (:mod:`nlbench.result`).
    """
    if not root.is_dir():
        return
    for path in sorted(root.rglob(RESULT)):
        if _hidden(path.parent, root):
            continue
        try:
            result = read_result(path)
        except DamagedResult:
            if damaged is not None:
                damaged.append(path)
            continue
        if RunDir(path.parent).foreign_result(result):  # copied in from another run: not this run's result
            if damaged is not None:
                damaged.append(path)
            continue
        yield path.parent, result


def _hidden(folder: Path, root: Path) -> bool:
    """Whether a folder under the store is nlbench's own scratch (``--force`` attempts, .submitit logs)."""
    return any(part.startswith(".") for part in folder.relative_to(root).parts)


#: The states a run can be in, in the order listings show them.
STATES = ("done", "running", "interrupted", "failed", "todo")


@dataclass
class StoreEntry:
    """One run folder found in a store: its identity (from spec.json) and its state."""

    path: Path
    dataset: str
    method: str
    noise: str
    seed: int
    run_id: str
    state: RunState
    #: The parsed spec.json (what the run is: method, hparams, data, noise, train settings).
    spec: dict[str, Any] = field(default_factory=dict)


def scan_store(root: Path) -> tuple[list[StoreEntry], list[Path]]:
    """Every run folder under ``root`` with its state, and the folders whose spec.json is damaged."""
    entries: list[StoreEntry] = []
    damaged: list[Path] = []
    if not Path(root).is_dir():
        return entries, damaged
    for spec_path in sorted(Path(root).rglob(SPEC)):
        if _hidden(spec_path.parent, Path(root)):
            continue
        spec = read_json_or_none(spec_path)
        try:
            noise = spec["noise"]
            label = "real" if noise["source"] == "dataset" else f"{noise['rate']:g} {noise['mode']}"
            entry = StoreEntry(spec_path.parent, spec["data"]["name"], spec["method"], label, int(spec["seed"]),
                               str(spec.get("run_id", "")), RunDir(spec_path.parent).state(), spec)
        except (TypeError, KeyError, ValueError):
            damaged.append(spec_path.parent)
            continue
        entries.append(entry)
    return entries, damaged
