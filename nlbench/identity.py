"""Content identities: canonical JSON, short hashes, file digests and the fingerprint of a dataset's files.

A run id must change whenever the numbers of a run could change, and the data is part of that:
two runs on different files must never share an id. Paths are not identities (the same files
sit at other paths on a laptop and on a cluster node), so what identifies the data is its
content as nlbench reads it: every sample reference made relative to the data root, the labels
and noisy labels of every split, and the SHA-256 of every file a sample names and of every file
at the top of the data root (the annotation files).

Hashing every image at each ``nlbench run`` would cost minutes on AffectNet, so the digests are
remembered (:class:`FileDigests`, in the cache folder) with each file's size and modification
time: a file is read again only when either changed, so images rewritten with other content of
the same size get another digest, and so another run id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal content gives equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def short_hash(obj: Any, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj``'s canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, recorded with every run that used it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def portable_ref(ref: Any, root: Path | None) -> Any:
    """A sample reference with paths under ``root`` made relative, so copies of the data match."""
    if isinstance(ref, (tuple, list)):
        return [portable_ref(r, root) for r in ref]
    if isinstance(ref, (str, Path)) and root is not None:
        text = str(ref)
        base = str(root)
        if text == base or text.startswith(base.rstrip(os.sep) + os.sep):
            return os.path.relpath(text, base)
    return ref if isinstance(ref, (int, float, str, type(None))) else repr(ref)


def ref_path(ref: Any) -> Path | None:
    """The file a sample reference names (a path, or the first element of a (path, box) pair), if any."""
    if isinstance(ref, (tuple, list)) and ref:
        ref = ref[0]
    return Path(ref) if isinstance(ref, (str, Path)) else None


def file_size(ref: Any) -> int | None:
    """The size of the file a reference names, if it names one that exists."""
    path = ref_path(ref)
    try:
        return os.stat(path).st_size if path is not None else None
    except (OSError, ValueError):
        return None


class FileDigests:
    """SHA-256 digests of a data root's files, remembered with each file's size and mtime.

    The memory is one JSON file per data root under ``folder`` (the cache folder); a file whose
    size or modification time changed is read and hashed again. Without a folder nothing is
    remembered and every file is hashed.
    """

    VERSION = 1

    def __init__(self, root: Path, folder: Path | None) -> None:
        self.root = root.resolve()
        self.file = (folder / "digests" / f"{short_hash(str(self.root), 16)}.json") if folder is not None else None
        stored = _read_json(self.file) if self.file is not None else None
        files = stored.get("files") if isinstance(stored, dict) and stored.get("version") == self.VERSION else None
        self.known: dict[str, list] = files if isinstance(files, dict) else {}
        self.changed = False

    def digest(self, path: Path | None) -> str | None:
        """The content digest of ``path`` (None: not a readable file)."""
        if path is None:
            return None
        try:
            stat = os.stat(path)
        except (OSError, ValueError):
            return None
        key = str(Path(path).resolve())
        entry = self.known.get(key)
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            return str(entry[2])
        try:
            value = file_sha256(Path(path))[:32]
        except OSError:
            return None
        self.known[key] = [stat.st_size, stat.st_mtime_ns, value]
        self.changed = True
        return value

    def save(self) -> None:
        """Remember the digests computed (atomically; a concurrent writer's copy is as good)."""
        if self.file is None or not self.changed:
            return
        from nlbench.fileio import atomic_write_bytes

        try:
            atomic_write_bytes(self.file, json.dumps({"version": self.VERSION, "files": self.known}).encode())
        except OSError:
            pass  # a read-only cache only costs the next run the hashing again
        self.changed = False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def data_fingerprint(root: Path | None, tables: Iterable[tuple[str, Any]], digests: FileDigests | None = None) -> str:
    """The content identity of a dataset's files as read (see the module docstring).

    ``tables`` yields (split, SampleTable); ``digests`` remembers file digests between runs (None:
    hash every file). The result is a 16-digit hex digest.
    """
    from concurrent.futures import ThreadPoolExecutor

    if digests is None and root is not None:  # nothing remembered: every file is hashed
        digests = FileDigests(root, None)
    digest = hashlib.sha256()
    digest.update(b"content v2\n")  # v1 identified files by size only
    resolved = root.resolve() if root is not None else None
    tables = list(tables)
    paths = [ref_path(ref) for _, table in tables for ref in table.refs]
    with ThreadPoolExecutor(max_workers=8) as pool:  # reading files: threads overlap the waits
        contents = iter(list(pool.map(digests.digest, paths)) if digests is not None else [None] * len(paths))
    for split, table in tables:
        digest.update(f"split {split} {len(table)}\n".encode())
        for ref in table.refs:
            content = next(contents)
            digest.update(canonical_json([portable_ref(ref, root), portable_ref(ref, resolved), content]).encode())
            digest.update(b"\n")
        digest.update(table.labels.astype("<i8").tobytes())
        if table.noisy_labels is not None:
            digest.update(b"noisy")
            digest.update(table.noisy_labels.astype("<i8").tobytes())
        if getattr(table, "votes", None) is not None:
            digest.update(f"votes {getattr(table, 'noise_rule', 'given')}".encode())
            digest.update(table.votes.astype("<i8").tobytes())
    if resolved is not None and resolved.is_dir():
        for entry in sorted(os.scandir(resolved), key=lambda e: e.name):
            if entry.is_file():
                content = digests.digest(Path(entry.path)) if digests is not None else None
                digest.update(f"top {entry.name} {content}\n".encode())
    if digests is not None:
        digests.save()
    return digest.hexdigest()[:16]
