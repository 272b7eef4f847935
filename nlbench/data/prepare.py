"""What ``nlbench prepare`` does: check a dataset's files, build its decode-once cache and list every problem.

Steps: build the dataset with its options (benchmark.toml and ``--set``) and check its layout (a
missing file or folder stops here with one DataError message, exit 2); for each split, list the
samples and decode them into the cache (:func:`nlbench.data.cache.load_split`) under a progress bar;
then look at the decoded pixels for flat-colour images and for identical images within and across
splits, for every dataset alike. Counts per class and split go to stdout as a table, followed by
every problem: the rows the dataset skipped or found odd (``SampleTable.problems``), images that
could not be decoded, flat and duplicate images.

Problems never stop the command. Undecodable images do keep the cache of their split from being
built (``nlbench run`` would stop on them), so the command then exits 2 after listing them all;
otherwise it exits 0. Decode failures are collected by wrapping the dataset's ``read_image`` on
this one instance, so every failure is listed while the cache is built in a single decoding pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from nlbench.data.cache import SplitData, default_cache_dir, load_split
from nlbench.data.noise import dataset_noise
from nlbench.dataset import SPLITS, Dataset, open_dataset
from nlbench.errors import DataError
from nlbench.progress import stderr_console

CHUNK = 4096  # images per block when scanning decoded pixels (bounded memory on large caches)


class ReadRecorder:
    """Wraps ``Dataset.read_image`` to record every failure (the cache reports only the first few)."""

    def __init__(self, read: Callable[[Any], np.ndarray]) -> None:
        self.read = read
        self.failures: list[str] = []
        self._lock = threading.Lock()  # the cache decodes with a thread pool

    def __call__(self, ref: Any) -> np.ndarray:
        try:
            image = np.asarray(self.read(ref))
            if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))) or 0 in image.shape:
                raise ValueError(f"read_image returned an array of shape {image.shape}, not HxWx3")
            return image
        except Exception as err:
            with self._lock:
                self.failures.append(f"{describe(ref)}: {type(err).__name__}: {err}")
            raise


def describe(ref: Any) -> str:
    """A sample reference as a person can look it up (a path, a path and face box, a row)."""
    if isinstance(ref, tuple) and ref and isinstance(ref[0], str):
        return f"{ref[0]} (face box {ref[1:] if len(ref) > 2 else ref[1]})"
    return str(ref)


def real_noise_options(cls: type, data_root: str | None, options: dict[str, Any], name: str | None = None) -> list[str]:
    """One line per choice of a dataset's ``real_noise`` option: the realised rate of its noisy training labels.

    ``name``: the dataset's name (a configured instance of the plugin ``cls``; default: the plugin's)."""
    import dataclasses
    import typing

    fields = {f.name: f for f in dataclasses.fields(cls.Options)} if dataclasses.is_dataclass(cls.Options) else {}
    if "real_noise" not in fields:
        return []
    hints = typing.get_type_hints(cls.Options)
    choices = [c for c in _literal_choices(hints["real_noise"]) if c != "none"]
    name = name or cls.name
    lines = []
    for choice in choices:
        try:
            instance = open_dataset(cls, data_root, {**dict(options), "real_noise": choice}, instance=name)
            table = instance.table("train")
            noise = dataset_noise(table, dataset=name, seed=1)
        except DataError as err:
            lines.append(f"real_noise = {choice}: not available here ({str(err)[:120]})")
            continue
        drawn = " (drawn with seed 1; other seeds differ slightly)" if table.noise_rule != "given" else ""
        lines.append(f"real_noise = {choice}: {100 * noise.realised_rate:.1f}% of {len(table):,} training labels "
                     f"wrong{drawn}")
    if lines:
        lines.insert(0, f"real noisy training labels (--noise-source dataset --set datasets.{name}.options.real_noise=...):")
    return lines


def _literal_choices(hint: Any) -> list[Any]:
    import typing

    out: list[Any] = []
    for arg in typing.get_args(hint):
        out.extend(arg) if isinstance(arg, tuple) else out.append(arg)
    return out


def prepare_dataset(cls: type[Dataset], dataset: str, data_root: str | None, options: dict[str, Any],
                    cache_dir: str | None, show: int) -> None:
    """Check a dataset's layout, build its image cache, and list counts and problems.

    ``cls`` is the plugin of the dataset called ``dataset`` (a configured instance of it, or the
    plugin's own name: :meth:`nlbench.spec.config.Config.dataset_class`); ``options`` are the
    dataset's options (benchmark.toml and ``--set``); ``cache_dir`` the configured cache folder
    ("" or None: the default).
    """
    if cls.needs_root and data_root is None:
        raise DataError(
            f"dataset {dataset!r} reads files from disk: give their folder with --data-root PATH "
            f"(nlbench never downloads data)."
        )
    instance = open_dataset(cls, data_root, options, instance=dataset)
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    recorder = ReadRecorder(instance.read_image)
    instance.read_image = recorder  # this instance only: same identity, same cache key
    out = Console(highlight=False, soft_wrap=True, emoji=False)
    out.print(header(instance), markup=False)

    loaded: dict[str, SplitData] = {}
    tables: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    failed: list[str] = []
    for split in SPLITS:
        try:
            table = instance.table(split)
        except DataError as err:  # e.g. a split the configuration does not provide
            problems[split] = [f"cannot list the {split} split: {err}"]
            failed.append(split)
            continue
        problems[split] = list(table.problems)
        tables[split] = table
        if len(table) == 0:
            problems[split].append(f"the {split} split has no usable samples")
            failed.append(split)
            continue
        before = len(recorder.failures)
        try:
            loaded[split] = decode_with_progress(instance, split, cache)
        except DataError as err:
            new = sorted(recorder.failures[before:])
            problems[split] += [f"cannot decode {line}" for line in new] or [str(err)]
            failed.append(split)

    for split, data in loaded.items():
        tables[split] = data.table  # generated datasets list their samples only when rendered
    out.print(counts_table(instance, tables, problems))
    for split in SPLITS:
        if split in loaded and loaded[split].table.has_real_noise:
            table = loaded[split].table
            noise = dataset_noise(table, dataset=dataset, seed=1)
            differ = int(np.sum(noise.labels != table.labels))
            out.print(f"{split}: the dataset ships noisy labels (--noise-source dataset); {differ} of {len(table)} "
                      f"differ from its labels" + (" (votes drawn with seed 1)" if table.noise_rule != "given" else ""),
                      markup=False)
    for line in real_noise_options(cls, data_root, options, dataset):
        out.print(line, markup=False)
    found = pixel_problems(loaded)
    report(out, problems, found, show)
    generated = type(instance).render is not Dataset.render
    for split in SPLITS:
        if split in loaded:
            where = "generated on the fly, nothing to cache" if generated else f"cached in {cache}"
            out.print(f"{split}: {len(loaded[split]):,} images {where}", markup=False)
    if failed:
        raise DataError(
            f"the {' and '.join(failed)} split(s) of {dataset!r} could not be prepared: fix the files listed above "
            f"(a listed image that is removed is skipped and reported), then run `nlbench prepare` again."
        )


def header(dataset: Dataset) -> str:
    """What the dataset declares: root, options, storage size, normalisation, augmentation, defaults."""
    options = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(dataset.options).items()) or "none"
    defaults = ", ".join(f"{k}={v}" for k, v in dataset.train_defaults.items()) or "none"
    mean = "/".join(f"{v:g}" for v in dataset.mean)
    std = "/".join(f"{v:g}" for v in dataset.std)
    plugin = f" (plugin {dataset.name})" if dataset.instance != dataset.name else ""
    return (
        f"{dataset.instance}{plugin} at {dataset.root} (options: {options})\n"
        f"stored at {dataset.storage_size}x{dataset.storage_size}, normalised with mean {mean} std {std}, "
        f"augmentation {dataset.augmentation!r}, training defaults: {defaults}"
    )


def decode_with_progress(dataset: Dataset, split: str, cache: Path) -> SplitData:
    """Load (decoding once, or mapping the existing cache) one split under a progress bar on stderr."""
    console = stderr_console()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, disable=not console.is_terminal,  # no bar in logs
    ) as progress:
        task = progress.add_task(f"decoding {split}", total=None)
        data = load_split(
            dataset, split, cache,
            advance=lambda n: progress.advance(task, n),
            on_total=lambda total: progress.update(task, total=total),
        )
        if progress.tasks[0].total is None:
            progress.update(task, description=f"{split}: ready (cached)", total=len(data), completed=len(data))
    return data


def counts_table(dataset: Dataset, tables: dict[str, Any], problems: dict[str, list[str]]) -> Table:
    """Samples per class (rows) and split (columns), as listed (undecodable images included)."""
    table = Table(title=f"{dataset.instance}: samples per class and split", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("class")
    for split in SPLITS:
        table.add_column(split, justify="right")
    counts = {s: np.bincount(t.labels, minlength=dataset.num_classes) for s, t in tables.items()}
    for index, name in enumerate(dataset.class_names):
        table.add_row(str(index), name, *(f"{counts[s][index]:,}" if s in counts else "-" for s in SPLITS))
    table.add_row("", "total", *(f"{int(counts[s].sum()):,}" if s in counts else "-" for s in SPLITS))
    table.add_row("", "problems", *(f"{len(problems.get(s, [])):,}" for s in SPLITS))
    return table


def pixel_problems(loaded: dict[str, SplitData]) -> list[str]:
    """Flat-colour images, and groups of identical decoded images within and across splits."""
    lines: list[str] = []
    groups: dict[bytes, list[tuple[str, Any]]] = {}
    for split, data in loaded.items():
        pixels = data.images.numpy().reshape(len(data), -1)
        refs = data.table.refs
        for start in range(0, len(data), CHUNK):
            block = pixels[start : start + CHUNK]
            flat = np.flatnonzero(block.min(axis=1) == block.max(axis=1))
            for i in flat:
                lines.append(f"{split}: {describe(refs[start + i])} is a single flat colour "
                             f"(value {int(block[i, 0])}): no face")
            for i in range(len(block)):
                digest = hashlib.blake2b(block[i].tobytes(), digest_size=16).digest()
                groups.setdefault(digest, []).append((split, refs[start + i]))
    duplicates = [members for members in groups.values() if len(members) > 1]
    across = sum(1 for members in duplicates if len({s for s, _ in members}) > 1)
    if duplicates:
        lines.append(f"{len(duplicates)} group(s) of identical images ({sum(map(len, duplicates))} images; "
                     f"{across} group(s) span train and test)")
        for members in duplicates:
            lines.append("identical: " + ", ".join(f"{split} {describe(ref)}" for split, ref in members))
    return lines


def report(out: Console, problems: dict[str, list[str]], pixels: list[str], show: int) -> None:
    """Print the problems, ``show`` per split and kind (0 = all)."""
    def shown(lines: list[str]) -> list[str]:
        if show <= 0 or len(lines) <= show:
            return lines
        return lines[:show] + [f"... and {len(lines) - show} more (--show 0 lists them all)"]

    total = sum(map(len, problems.values()))
    if total == 0 and not pixels:
        out.print("no problems found", markup=False)
        return
    for split in SPLITS:
        if problems.get(split):
            out.print(f"{split} problems ({len(problems[split]):,}):", markup=False)
            for line in shown(problems[split]):
                out.print(f"  {line}", markup=False)
    if pixels:
        out.print("decoded-image checks:", markup=False)
        flat = [line for line in pixels if "single flat colour" in line]
        rest = [line for line in pixels if "single flat colour" not in line]
        for line in shown(flat) + rest[:1] + shown(rest[1:]):
            out.print(f"  {line}", markup=False)
