"""Content identities: canonical JSON, short hashes, file digests and the fingerprint of a dataset's files.

A run id must change whenever the numbers of a run could change, and the data is part of that:
two runs on different files must never share an id. Paths are not identities (the same files
sit at other paths on a laptop and on a cluster node), so what identifies the data is its
content as nlbench reads it: every sample reference made relative to the data root, the labels
and noisy labels of every split, the size of every file a sample names and of every file at the
top of the data root (the annotation files). Hashing every image would cost minutes on
AffectNet at each `nlbench run`; sizes catch replaced images in practice, and a dataset plugin
whose content can change without any of that changing bumps its ``version``.
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


def _file_size(ref: Any) -> int | None:
    """The size of the file a reference names (first element of a (path, box) pair), if it is one."""
    if isinstance(ref, (tuple, list)) and ref:
        ref = ref[0]
    if isinstance(ref, (str, Path)):
        try:
            return os.stat(ref).st_size
        except OSError:
            return None
    return None


def data_fingerprint(root: Path | None, tables: Iterable[tuple[str, Any]]) -> str:
    """The content identity of a dataset's files as read (see the module docstring).

    ``tables`` yields (split, SampleTable). The result is a 16-digit hex digest.
    """
    digest = hashlib.sha256()
    resolved = root.resolve() if root is not None else None
    for split, table in tables:
        digest.update(f"split {split} {len(table)}\n".encode())
        for ref in table.refs:
            digest.update(canonical_json([portable_ref(ref, root), portable_ref(ref, resolved), _file_size(ref)]).encode())
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
                digest.update(f"top {entry.name} {entry.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]
