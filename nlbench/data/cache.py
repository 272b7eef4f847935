"""The decode-once image cache: every image is decoded and resized once into a uint8 array.

Datasets read from files are decoded through :meth:`Dataset.read_image` into a memory-mapped
``N x 3 x S x S`` uint8 file in the cache folder, keyed by the dataset's identity and the exact
sample list, so later runs (and other processes of a sweep) map it instead of decoding again.
Generated datasets (``Dataset.render``) produce their pixels directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nlbench.dataset import Dataset, SampleTable
from nlbench.errors import DataError
from nlbench.fileio import CACHE_ENV, cache_home  # noqa: F401  (CACHE_ENV: the old import path)
from nlbench.identity import file_sha256

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

CACHE_VERSION = 2  # 2: entries keyed by the content of the files, and checked before use


@dataclass
class SplitData:
    """The images (uint8 tensor, N x 3 x S x S, on the CPU) and sample table of one split."""

    images: torch.Tensor
    table: SampleTable

    def __len__(self) -> int:
        return len(self.table)


def default_cache_dir() -> Path:
    """Where decoded images are kept: $NLBENCH_CACHE, else ~/.cache/nlbench."""
    return cache_home()


def to_storage(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 (or HxW) uint8 image to size x size and return it as 3 x S x S."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    if array.shape[0] != size or array.shape[1] != size:
        array = np.asarray(Image.fromarray(array.astype(np.uint8)).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.uint8)


def _cache_key(dataset: Dataset, split: str, table: SampleTable) -> str:
    digest = hashlib.sha256()
    # The content of the files (their digests), not only their paths: images rewritten in place
    # with other pixels are decoded again instead of being read from the old entry.
    digest.update(json.dumps({"v": CACHE_VERSION, "id": dataset.identity(), "split": split,
                              "content": dataset.fingerprint()}, sort_keys=True).encode())
    for ref in table.refs:
        digest.update(repr(ref).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def decode_images(
    dataset: Dataset, table: SampleTable, out: np.ndarray, advance: Callable[[int], None] | None = None
) -> list[str]:
    """Decode every sample of ``table`` into ``out``; returns the refs that could not be read."""
    size = dataset.storage_size
    failures: list[str] = []

    def work(i: int) -> tuple[int, str | None]:
        try:
            out[i] = to_storage(dataset.read_image(table.refs[i]), size)
            return i, None
        except Exception as err:  # corrupt or unreadable file: reported, never a crash mid-way
            return i, f"{table.refs[i]}: {type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for _, problem in pool.map(work, range(len(table))):
            if problem:
                failures.append(problem)
            if advance:
                advance(1)
    return failures


def _complete(path: Path, shape: tuple[int, ...]) -> bool:
    return path.is_file() and path.stat().st_size == int(np.prod(shape))


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock while one cache entry is built (a no-op where the filesystem has no flock)."""
    handle = open(path.with_suffix(".lock"), "a+")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except OSError:
                pass  # no locks here: at worst two processes decode the same images; the rename stays atomic
        yield
    finally:
        handle.close()


def _build(dataset: Dataset, split: str, table: SampleTable, path: Path, shape: tuple[int, ...],
           on_total: Callable[[int], None] | None, advance: Callable[[int], None] | None) -> None:
    """Decode every image of ``table`` into a new cache file at ``path`` (atomically)."""
    if on_total:
        on_total(len(table))
    partial = path.with_suffix(f".partial-{os.getpid()}")
    try:
        _reserve(partial, int(np.prod(shape)))
        pixels = np.memmap(partial, dtype=np.uint8, mode="r+", shape=shape)
        failures = decode_images(dataset, table, pixels, advance)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if failures:
        del pixels
        partial.unlink(missing_ok=True)
        shown = "\n  ".join(failures[:5])
        more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise DataError(
            f"{len(failures)} {split} image(s) of dataset {dataset.instance!r} could not be decoded:\n  {shown}{more}\n"
            f"Replace or remove them; `nlbench prepare --dataset {dataset.instance} --data-root {dataset.root}` lists "
            f"every problem."
        )
    pixels.flush()
    del pixels
    os.replace(partial, path)  # atomic: a half-written cache is never mistaken for a complete one
    _seal(path)


def _reserve(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes of disk reserved: a full disk is an error here (ENOSPC),
    not a SIGBUS while writing pixels into a sparse memory map."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:  # pragma: no cover - macOS, Windows: sparse, as before
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _check_file(path: Path) -> Path:
    return path.with_name(path.name + ".check")


def _seal(path: Path) -> None:
    """Record a finished entry's digest beside it, with the size and time it was checked at."""
    from nlbench.fileio import atomic_write_bytes

    stat = path.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}
    atomic_write_bytes(_check_file(path), json.dumps(record).encode())


def _intact(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether a cache entry is complete and holds the bytes it was built with.

    The digest is read again only when the file's size or modification time differs from when it
    was sealed, so an intact entry costs one stat; a replaced or damaged one is built anew.
    """
    if not _complete(path, shape) or not _check_file(path).is_file():
        return False
    try:
        record = json.loads(_check_file(path).read_text())
        stat = path.stat()
        if [record["size"], record["mtime_ns"]] == [stat.st_size, stat.st_mtime_ns]:
            return True
        if record["sha256"] == file_sha256(path):
            _seal(path)
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from nlbench.progress import stderr_console

    stderr_console().print(f"note: the cached images {path} do not match their record; decoding them again.",
                           markup=False)
    return False


def load_split(
    dataset: Dataset,
    split: str,
    cache_dir: Path | None = None,
    advance: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> SplitData:
    """The images and labels of one split, decoded once and cached on disk."""
    rendered = dataset.render(split)
    if rendered is not None:
        pixels, table = rendered
        return SplitData(torch.from_numpy(np.ascontiguousarray(pixels)), table)
    table = dataset.table(split)
    if len(table) == 0:
        raise DataError(f"dataset {dataset.instance!r} has no {split} samples under {dataset.root}.")
    size = dataset.storage_size
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.name}-{split}-{_cache_key(dataset, split, table)}.u8"
    shape = (len(table), 3, size, size)
    if not _intact(path, shape):
        # One process decodes, the others of a sweep wait for it: the lock is per cache entry.
        with _build_lock(path):
            if not (_complete(path, shape) and _check_file(path).is_file() and _intact(path, shape)):
                _build(dataset, split, table, path, shape, on_total, advance)
    pixels = np.memmap(path, dtype=np.uint8, mode="c", shape=shape)  # copy-on-write: torch wants a writable array
    return SplitData(torch.from_numpy(np.asarray(pixels)), table)
