"""Which code produced a result: nlbench's version and git commit, and the plugin files of the method
and the dataset, with a check of whether the code installed now is still the same.

The code is recorded in every result, not hashed into the run id: an edit that changes no number
(a docstring, a refactor) would otherwise orphan every stored run of a method. Instead the
readers (``status``, ``runs``, ``table``) and ``sweep`` compare each recorded plugin file's SHA-256
with the file at the same path now, and name the runs trained with other code; ``--force``
retrains them.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

from nlbench.identity import file_sha256


def plugin_file(cls: type) -> dict[str, str] | None:
    """The source file that defines ``cls``: its path, a short name (``methods/gce.py``) and SHA-256."""
    try:
        path = Path(inspect.getfile(cls)).resolve()
    except (TypeError, OSError):  # defined interactively: no file
        return None
    if not path.is_file():
        return None
    return {"path": str(path), "name": f"{path.parent.name}/{path.name}", "sha256": file_sha256(path)}


@functools.cache
def nlbench_commit() -> str | None:
    """The git commit of the nlbench checkout running (None when installed from a package)."""
    git = Path(__file__).resolve().parents[1] / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for folder in (git, _common_dir(git)):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()
            packed = folder / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return None


def _common_dir(git: Path) -> Path:
    common = git / "commondir"
    return (git / common.read_text().strip()).resolve() if common.is_file() else git


def code_record(method_cls: type, dataset_cls: type) -> dict[str, Any]:
    """The ``code`` entry of a result."""
    import nlbench

    return {"nlbench": nlbench.__version__, "commit": nlbench_commit(),
            "method_file": plugin_file(method_cls), "dataset_file": plugin_file(dataset_cls)}


def _current_sha256(path: str) -> str | None:
    """The file's SHA-256 now (None: gone), hashed once per version of the file (size, mtime)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _sha256_of(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str | None:
    try:
        return file_sha256(Path(path))
    except OSError:
        return None


def code_changes(result: Any) -> list[str]:
    """What differs between the code a result records and the files at the same paths now:
    ``["methods/gce.py"]`` (empty: the same, or nothing recorded to compare)."""
    code = result.get("code") or {}
    changed = []
    for key in ("method_file", "dataset_file"):
        record = code.get(key)
        if not isinstance(record, dict) or not record.get("path") or not record.get("sha256"):
            continue
        now = _current_sha256(record["path"])
        if now is not None and now != record["sha256"]:
            changed.append(str(record.get("name") or record["path"]))
    return changed


def stale_text(changes: list[str]) -> str:
    """``trained with other code of methods/gce.py``."""
    return f"trained with other code of {', '.join(changes)}"
