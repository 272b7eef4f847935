"""The benchmark's data: synthetic JPEG files read through nlbench's decode-once cache, and the
AffectNet-8-scale uint8 memmap, each as a dataset plugin instance with its train and test split."""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nlbench.data.cache import SplitData, load_split
from nlbench.dataset import AFFECTNET_ORDER, Dataset, SampleTable
from nlbench.lib.synthface import CLASS_NAMES, render_faces, sample_labels

SEED = 1
#: Injected flip noise of every training row (``nlbench run``'s default rate).
NOISE_RATE = 0.2


@dataclass
class Data:
    """A dataset plugin instance and its two splits, handed to ``nlbench.train.assemble.assemble``."""

    dataset: Dataset
    train: SplitData
    test: SplitData
    notes: str = ""


# -- synthetic JPEG files -------------------------------------------------------------------------
def _render_chunk(args: tuple[np.ndarray, int, int, str | None, int]) -> np.ndarray | None:
    labels, size, seed, folder, first = args
    pixels = render_faces(labels, size, seed)
    if folder is None:
        return pixels
    for j, img in enumerate(pixels):
        Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(
            os.path.join(folder, f"{first + j:06d}.jpg"), quality=90)
    return None


def render_many(labels: np.ndarray, size: int, seed: int, folder: Path | None, workers: int) -> np.ndarray | None:
    """Render faces (and write them as JPEGs when ``folder`` is given) in parallel processes."""
    chunk = 128
    jobs = [(labels[i:i + chunk], size, seed * 100_000 + i, str(folder) if folder else None, i)
            for i in range(0, len(labels), chunk)]
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(job) for job in jobs]
    return None if folder is not None else np.concatenate(parts)


class JpegFolder(Dataset):
    """The benchmark's JPEG files as a dataset plugin, so nlbench's own decode-once cache reads them."""

    name = "bench_jpeg"
    class_names = CLASS_NAMES
    needs_root = True

    def __init__(self, root: Path, labels: np.ndarray, storage_size: int) -> None:
        super().__init__(root, {})
        self.labels = labels
        self.storage_size = storage_size

    def table(self, split: str) -> SampleTable:
        refs = [str(self.root / f"{i:06d}.jpg") for i in range(len(self.labels))]
        return SampleTable(refs=refs, labels=self.labels)

    def read_image(self, ref: Any) -> np.ndarray:
        with Image.open(ref) as im:
            return np.asarray(im.convert("RGB"))

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "n": len(self.labels)}


def prepare_data(args: argparse.Namespace, scratch: Path) -> Data:
    """Write the training JPEGs, decode them through nlbench's cache, render the test set."""
    workers = max(1, min(16, os.cpu_count() or 1))
    jpeg_dir = scratch / "jpeg"
    jpeg_dir.mkdir(parents=True, exist_ok=True)
    clean = sample_labels(args.images, seed=SEED)
    t0 = time.perf_counter()
    render_many(clean, args.stored_px, SEED, jpeg_dir, workers)
    rendered = time.perf_counter() - t0
    t0 = time.perf_counter()
    dataset = JpegFolder(jpeg_dir, clean, args.stored_px)
    train = load_split(dataset, "train", scratch / "cache")  # nlbench's decode-once cache
    decoded = time.perf_counter() - t0
    test_labels = sample_labels(args.eval_images, seed=SEED + 1)
    test = render_many(test_labels, args.stored_px, SEED + 1, None, workers)
    jpeg_bytes = sum(p.stat().st_size for p in jpeg_dir.glob("*.jpg"))
    notes = (f"{args.images} JPEGs at {args.stored_px} px ({jpeg_bytes / 2**20:.0f} MiB) rendered+written in "
             f"{rendered:.1f} s; nlbench cache decoded in {decoded:.1f} s")
    test_split = SplitData(torch.from_numpy(np.ascontiguousarray(test)),
                           SampleTable(refs=range(len(test_labels)), labels=test_labels))
    return Data(dataset, train, test_split, notes)


# -- AffectNet-8 scale ----------------------------------------------------------------------------
class AffectNetScale(Dataset):
    """AffectNet-8 in size only: 8 classes, the AffectNet augmentation, images tiled from a few faces."""

    name = "bench_affectnet"
    class_names = AFFECTNET_ORDER
    needs_root = False
    augmentation = "affectnet"

    def __init__(self, storage_size: int) -> None:
        super().__init__(None, {})
        self.storage_size = storage_size


def affectnet_labels(n: int) -> np.ndarray:
    """Clean labels of the AffectNet-scale rows, uniform over the 8 classes."""
    return np.random.default_rng(SEED).integers(0, len(AFFECTNET_ORDER), size=n)


def affectnet_data(images: torch.Tensor, clean: np.ndarray, size: int, test_images: int) -> Data:
    """The memmap as the training split; its first ``test_images`` rows as the (unused but required) test split."""
    m = min(test_images, len(clean))
    train = SplitData(images, SampleTable(refs=range(len(clean)), labels=clean))
    test = SplitData(images[:m], SampleTable(refs=range(m), labels=clean[:m]))
    return Data(AffectNetScale(size), train, test)


def pick_scratch(nbytes: int, preferred: str | None) -> Path | None:
    """A folder with room for ``nbytes`` (+ margin): --scratch, else /dev/shm, else the temp dir."""
    margin = min(4 * 2**30, nbytes // 10 + 64 * 2**20)
    candidates = [Path(preferred)] if preferred else [Path("/dev/shm"), Path(tempfile.gettempdir())]
    for folder in candidates:
        try:
            if folder.is_dir() and os.access(folder, os.W_OK) and shutil.disk_usage(folder).free > nbytes + margin:
                return folder
        except OSError:
            continue
    return None


def host_memory_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_memmap(path: Path | None, n: int, size: int, unique: int = 64) -> tuple[torch.Tensor, float]:
    """An n x 3 x S x S uint8 memmap filled by tiling a few rendered faces (fast; no per-image render).

    ``path`` None: the same array in anonymous host memory.
    """
    t0 = time.perf_counter()
    faces = render_faces(sample_labels(unique, seed=SEED + 7), size, SEED + 7)
    rows = max(unique, (256 * 2**20) // faces[0].nbytes // unique * unique)  # ~256 MiB blocks
    block = np.tile(faces, (math.ceil(rows / unique), 1, 1, 1))[:rows]
    shape = (n, 3, size, size)
    out = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape) if path is not None else np.empty(shape, np.uint8)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        out[start:stop] = block[: stop - start]
    if path is None:
        return torch.from_numpy(out), time.perf_counter() - t0
    del out
    # Reopened the way nlbench.data.cache.load_split maps its cache: copy-on-write, wrapped by torch.
    mapped = np.memmap(path, dtype=np.uint8, mode="c", shape=shape)
    return torch.from_numpy(np.asarray(mapped)), time.perf_counter() - t0
