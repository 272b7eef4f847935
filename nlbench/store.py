"""The run store: one directory per run, written so that a crash never looks like a result.

Layout of ``<runs>/<dataset>/<method>/noise<rate>-<mode>/seed<seed>-<run_id>/``:

- ``spec.json``: the fully resolved run specification (its hash is the run id);
- ``status.json``: pending, running, done or failed (with the error, epoch and batch);
- ``metrics.jsonl``: one line per epoch and phase;
- ``noisy_labels.npy``: the training labels the method was given;
- ``checkpoint.pt``: everything needed to resume, replaced atomically after every epoch;
- ``result.json``: written last by atomic rename; its presence means the run is done.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nlbench.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.spec import RunSpec

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see either the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys, indented for people reading it)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def run_dir_name(spec: RunSpec) -> Path:
    """Relative folder of a run: grouped by dataset, method and noise, so people can browse it."""
    noise = spec.noise
    label = f"noise{noise.rate:.2f}-{noise.mode if noise.source == 'injected' else 'dataset'}"
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
        """A run is done exactly when its result.json exists."""
        return self.file(RESULT).is_file()

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint to resume from exists."""
        return self.file(CHECKPOINT).is_file()

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run."""
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def set_status(self, state: str, **details: Any) -> None:
        """Record the run's state (pending, running, done, failed) and details."""
        status = {"state": state, "updated": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
        status.update(details)
        atomic_write_json(self.file(STATUS), status)

    # -- writing ----------------------------------------------------------------------------
    def write_spec(self, spec: dict[str, Any]) -> None:
        """Write spec.json (atomically)."""
        atomic_write_json(self.file(SPEC), spec)

    def write_noisy_labels(self, labels: np.ndarray) -> None:
        """Store the training labels given to the method."""
        buffer = _npy_bytes(labels)
        atomic_write_bytes(self.file(NOISY_LABELS), buffer)

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from the full history (used after resuming from a checkpoint)."""
        text = "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in records)
        atomic_write_bytes(self.file(METRICS), text.encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's line to metrics.jsonl."""
        with open(self.file(METRICS), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=_json_default) + "\n")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace checkpoint.pt atomically."""
        import torch  # only runs that train pay for importing torch, not `nlbench table`

        fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", dir=self.path)
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.file(CHECKPOINT))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self) -> dict[str, Any]:
        """Read checkpoint.pt (on the CPU)."""
        import torch

        return torch.load(self.file(CHECKPOINT), map_location="cpu", weights_only=False)

    def write_result(self, result: dict[str, Any]) -> None:
        """Write result.json last, by atomic rename."""
        atomic_write_json(self.file(RESULT), result)

    def clear(self) -> None:
        """Remove the outputs of an earlier attempt (``--force``), keeping the folder."""
        for name in (RESULT, CHECKPOINT, METRICS, STATUS, NOISY_LABELS):
            self.file(name).unlink(missing_ok=True)

    # -- locking ----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run's lock, or fail if another process is training it."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.file(".lock"), "a+")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise UsageError(f"run {self.path} is being trained by another process; wait for it or stop it.") from None
        self._lock_handle = handle

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock`."""
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def iter_results(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every finished run under ``root``: (run folder, parsed result.json)."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob(RESULT)):
        try:
            yield path.parent, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a result is written atomically; an unreadable one is not ours to trust
