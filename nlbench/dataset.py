"""The dataset contract: what a dataset plugin declares and returns.

A dataset plugin only *describes* data. It checks the files a user has on disk, lists the samples
of each split with their labels (:class:`SampleTable`), and reads one image when asked. The core
decodes every image once into a uint8 cache (:mod:`nlbench.data.cache`), injects label noise
(:mod:`nlbench.data.noise`) and augments batches on the training device (:mod:`nlbench.data.augment`).
A dataset never downloads anything: when files are missing it raises :class:`DataError` naming
the path it expected and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nlbench.errors import DataError
from nlbench.identity import FileDigests, canonical_json, data_fingerprint
from nlbench.options import build_options, identity_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

#: The AffectNet class order, the common order of cross-dataset reports (docs/methods.md §2.1).
AFFECTNET_ORDER = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")

SPLITS = ("train", "test")
#: Class names recognised as AffectNet expressions (lower case) -> index in AFFECTNET_ORDER.
AFFECTNET_SYNONYMS = {name: i for i, name in enumerate(AFFECTNET_ORDER)} | {
    "neutrality": 0, "happy": 1, "joy": 1, "sad": 2, "surprised": 3, "surprise": 3, "fearful": 4, "afraid": 4,
    "scared": 4, "disgusted": 5, "angry": 6, "contemptuous": 7,
}


def stratified_test_draw(count: int, class_name: str, test_fraction: float, seed: int) -> set[int]:
    """Which of a class's ``count`` samples (in a fixed order) go to the test set, by a seeded draw.

    ``round(count * test_fraction)`` of them, at least 1 and at most count - 1 when the class has 2
    or more; the draw depends only on the class name, the count and the seed, so adding a class
    leaves the others' draws unchanged. (The subject draw of :func:`draw_test_set` passes
    :data:`SUBJECTS_KEY` as the class name.)
    """
    import zlib

    n_test = min(max(int(round(count * test_fraction)), 1), count - 1) if count >= 2 else 0
    rng = np.random.default_rng([seed, zlib.crc32(class_name.encode())])
    return set(rng.permutation(count)[:n_test].tolist())


#: The key of the seeded draws over subjects (class draws use the class name).
SUBJECTS_KEY = "subjects"


def seeded_folds(count: int, key: str, folds: int, seed: int, start: int = 0) -> list[int]:
    """The 0-based fold of each of ``count`` samples (in a fixed order): a seeded permutation dealt round-robin.

    The permutation is the one :func:`stratified_test_draw` uses for the same key and seed; the
    sample at position p of it goes to fold ``(start + p) % folds``, so fold sizes differ by at
    most 1 (also across calls that continue the deal with ``start``).
    """
    import zlib

    order = np.random.default_rng([seed, zlib.crc32(key.encode())]).permutation(count)
    out = [0] * count
    for position, index in enumerate(order.tolist()):
        out[index] = (start + position) % folds
    return out


def draw_test_set(labels: Sequence[int], keys: Sequence[str], class_names: Sequence[str],
                  groups: Sequence[str] | None, test_fraction: float, seed: int, folds: int = 0,
                  fold: int = 1) -> set[int]:
    """Which samples (indices into ``labels``, ``keys`` and ``groups``) form the test set.

    ``keys`` (e.g. the image paths) fix the order of the samples; ``groups`` (None: none) name
    each sample's subject. The rules:

    * no groups, ``folds`` 0: per class, :func:`stratified_test_draw` over the class's samples
      sorted by key;
    * no groups, ``folds`` k: per class in label order, the samples sorted by key are put in a
      seeded order and dealt round-robin into k folds, the deal going on from one class to the
      next (fold sizes differ by at most 1, and each fold has every class with k or more samples);
      fold ``fold`` (1-based) is the test set;
    * groups, ``folds`` 0: the subjects sorted by id, a seeded permutation of them (seed and
      :data:`SUBJECTS_KEY`), the first ``round(n * test_fraction)`` clamped to [1, n - 1]: every
      sample of those subjects is in the test set. Not stratified by class: a subject's samples
      go together, whatever their classes;
    * groups, ``folds`` k: the subjects, sorted and seeded as above, dealt round-robin into k folds.

    Raises :class:`DataError` when a draw cannot leave both sets non-empty (fewer than 2 subjects,
    fewer subjects or samples than folds).
    """
    if groups is not None:
        subjects = sorted(set(groups))
        if len(subjects) < 2:
            raise DataError(f"the images name {len(subjects)} subject(s); a subject-independent split needs at "
                            f"least 2 (check the group option, or leave it empty to split by image).")
        if folds:
            if len(subjects) < folds:
                raise DataError(f"{folds} folds need at least {folds} subjects, and the images name "
                                f"{len(subjects)}; lower folds.")
            fold_of = seeded_folds(len(subjects), SUBJECTS_KEY, folds, seed)
            chosen = {s for s, f in zip(subjects, fold_of) if f == fold - 1}
        else:
            chosen = {subjects[i] for i in stratified_test_draw(len(subjects), SUBJECTS_KEY, test_fraction, seed)}
        return {i for i, group in enumerate(groups) if group in chosen}
    if folds and len(labels) < folds:
        raise DataError(f"{folds} folds need at least {folds} images, and there are {len(labels)}; lower folds.")
    test: set[int] = set()
    dealt = 0
    for label, class_name in enumerate(class_names):
        members = sorted((i for i, y in enumerate(labels) if y == label), key=lambda i: keys[i])
        if folds:
            fold_of = seeded_folds(len(members), class_name, folds, seed, start=dealt)
            test.update(m for m, f in zip(members, fold_of) if f == fold - 1)
            dealt += len(members)
        else:
            test.update(members[i] for i in stratified_test_draw(len(members), class_name, test_fraction, seed))
    return test


def check_subjects_apart(groups: Sequence[str], splits: Sequence[str], where: str) -> None:
    """Raise :class:`DataError` naming the first subject (by id) with samples in both splits of a given split."""
    train = {g for g, s in zip(groups, splits) if s == "train"}
    both = sorted(train & {g for g, s in zip(groups, splits) if s == "test"})
    if both:
        others = f" (and {len(both) - 1} other subject(s))" if len(both) > 1 else ""
        raise DataError(f"subject {both[0]!r}{others} has images in both the train and the test split of {where}; "
                        f"a subject-independent split needs each subject in one split only: fix the split, or "
                        f"leave the group option empty.")


def compile_group_pattern(text: str) -> re.Pattern[str] | None:
    """The compiled ``group_pattern`` option (None when empty); ValueError naming the option when invalid."""
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as err:
        raise ValueError(f"group_pattern '{text}' is not a valid regular expression ({err})") from None


def subject_of(pattern: re.Pattern[str], relative: str, dataset: str) -> str:
    """The subject ``pattern`` finds in an image's path relative to the data root (its first group, or the match)."""
    match = pattern.search(relative)
    subject = (match.group(1) if pattern.groups else match.group(0)) if match else None
    if not subject:
        raise DataError(
            f"image {relative} does not match datasets.{dataset}.options.group_pattern '{pattern.pattern}'"
            f"{'' if match is None else ' (its first group is empty)'}: the pattern must find a subject in the path "
            f"of every image (relative to the data root), e.g. '(S\\d+)_' for S005_001_00000011.png; fix the "
            f"pattern or remove the image.")
    return subject


def check_protocol_options(group_pattern: str, folds: int, fold: int, group_column: str = "",
                           split_column: str = "") -> None:
    """The cross-field rules of the group and fold options (ValueError naming the options)."""
    if group_column and group_pattern:
        raise ValueError("set group_column or group_pattern, not both (each gives every image's subject)")
    compile_group_pattern(group_pattern)
    if folds == 1:
        raise ValueError("folds must be 0 (no cross-validation) or 2 to 100, got 1")
    if not folds and fold != 1:
        raise ValueError(f"fold {fold} is set but folds is 0: set folds too (e.g. folds=10), or leave fold out")
    if folds and fold > folds:
        raise ValueError(f"fold {fold} is more than folds {folds} (fold counts from 1 to folds)")
    if folds and split_column:
        raise ValueError(f"folds {folds} (cross-validation) draws the test set, which split_column "
                         f"{split_column!r} gives: set one of them")


def affectnet_mapping(class_names: tuple[str, ...]) -> tuple[int, ...] | None:
    """Index in AFFECTNET_ORDER of each class name, or None unless every name maps, each to its own class."""
    mapped = [AFFECTNET_SYNONYMS.get(name.strip().lower()) for name in class_names]
    if any(m is None for m in mapped) or len(set(mapped)) != len(mapped):
        return None
    return tuple(int(m) for m in mapped if m is not None)


@dataclass
class SampleTable:
    """The samples of one split: references the dataset can read, and their labels.

    ``refs[i]`` is whatever :meth:`Dataset.read_image` understands (a path, a path plus a face
    box, a row number). ``labels`` are the dataset's own (clean, as far as it knows) labels.
    Datasets with real noisy training labels (noise source ``dataset``) either set
    ``noisy_labels``, or set ``votes`` (N x K annotator vote counts) and ``noise_rule`` ``vote`` or
    ``worst``, and the core draws one vote per sample with the run's seed
    (:func:`nlbench.data.noise.draw_from_votes`). ``noise_note`` says in a line how the noisy labels came
    about (stored with every run). ``problems`` lists rows skipped or suspicious, reported by
    ``nlbench prepare``.
    """

    refs: Sequence[Any]
    labels: np.ndarray
    noisy_labels: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)
    votes: np.ndarray | None = None
    noise_rule: str = "given"
    noise_note: str = ""

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.refs) != len(self.labels):
            raise ValueError(f"{len(self.refs)} refs but {len(self.labels)} labels")
        if self.noisy_labels is not None:
            self.noisy_labels = np.asarray(self.noisy_labels, dtype=np.int64)
            if len(self.noisy_labels) != len(self.labels):
                raise ValueError("noisy_labels and labels differ in length")
        if self.votes is not None:
            self.votes = np.asarray(self.votes, dtype=np.int64)
            if self.votes.ndim != 2 or len(self.votes) != len(self.labels):
                raise ValueError("votes must be (N, K) counts, one row per sample")
        if self.noise_rule not in ("given", "vote", "worst"):
            raise ValueError(f"noise_rule must be given, vote or worst, got {self.noise_rule!r}")
        if self.noise_rule != "given" and self.votes is None:
            raise ValueError(f"noise_rule {self.noise_rule!r} needs the votes")

    @property
    def has_real_noise(self) -> bool:
        """Whether the split carries real noisy labels (given, or drawn from its votes)."""
        return self.noisy_labels is not None or self.noise_rule != "given"

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class NoOptions:
    """Options of a dataset that has none."""


class Dataset:
    """Base class of dataset plugins; subclass it and register it with ``register_datasets``.

    Class attributes declare the dataset; the constructor receives the data root given by the
    user (``--data-root``, ``None`` for datasets that need no files) and the dataset options
    (``[datasets.<name>.options]`` in benchmark.toml, validated against :attr:`Options`).
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]]
    #: Side of the square uint8 images kept in the decode-once cache.
    storage_size: ClassVar[int] = 112
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    #: Training augmentation pipeline (see :mod:`nlbench.data.augment`): "cct", "affectnet", "scn" or "none".
    augmentation: ClassVar[str] = "cct"
    #: Whether the dataset reads user files (``--data-root`` required).
    needs_root: ClassVar[bool] = True
    #: Training settings this dataset changes from ``[train]`` (e.g. classifier_lr on AffectNet).
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: Index in :data:`AFFECTNET_ORDER` of each of this dataset's classes, for cross-dataset reports.
    to_affectnet: ClassVar[tuple[int, ...] | None] = None
    Options: ClassVar[type] = NoOptions
    #: First class number of the ``name label`` noise lists published for this dataset
    #: (RAF-DB's count from 1), read by ``--noise-file``.
    list_label_base: ClassVar[int] = 0
    #: Version of what the plugin produces for given files and options. Bump it when that changes
    #: (a new renderer, a fixed parser): it is part of the cache key and of the run id, so images
    #: and results of the old version are never mistaken for the new one.
    version: ClassVar[str] = "1"
    #: The landmark scheme (:data:`nlbench.landmarks.SCHEMES`) of :meth:`read_landmarks`, or None
    #: when the dataset has no landmarks (an instance may set it from its options).
    landmark_scheme: str | None = None
    #: Version of the landmark definition: with the scheme, it names the landmarks in the id of a
    #: run whose method trains on them (``data.landmarks``), and only of such a run.
    landmark_version: str = "1"

    def __init__(self, root: Path | None = None, options: dict[str, Any] | None = None) -> None:
        if self.needs_root and root is None:
            raise DataError(
                f"dataset {self.instance!r} reads files from disk: give their folder with --data-root PATH "
                f"(nlbench never downloads data; `nlbench prepare --dataset {self.instance} --data-root PATH` checks it)."
            )
        self.root = Path(root).expanduser() if root is not None else None
        self.options = build_options(self.Options, options or {}, f"datasets.{self.instance}.options")

    @property
    def instance(self) -> str:
        """The name the user gave this dataset (``[datasets.<instance>]``, ``--dataset``): runs are
        stored and reported under it, and its messages name it. :func:`open_dataset` sets it; it is
        the plugin's :attr:`name` unless benchmark.toml declares an instance of the plugin under
        another name."""
        return self.__dict__.get("_instance", self.name)

    @property
    def num_classes(self) -> int:
        """Number of classes the dataset's labels index."""
        return len(self.class_names)

    def check(self) -> None:
        """Check the layout on disk and raise :class:`DataError` naming what is missing."""
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"data root {str(self.root)!r} of dataset {self.instance!r} is not a folder.")

    def table(self, split: str) -> SampleTable:
        """The samples of ``split`` ("train" or "test") with their labels: read once, then kept.

        Plugins implement :meth:`read_table`; this checks the split's name and keeps its table.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
        tables = self.__dict__.setdefault("_table_cache", {})
        if split not in tables:
            tables[split] = self.read_table(split)
        return tables[split]

    def read_table(self, split: str) -> SampleTable:
        """Read the samples of ``split`` (a name of :data:`SPLITS`) with their labels; called once per split."""
        raise NotImplementedError(f"dataset plugin {self.name!r} must implement read_table(split)")

    def read_image(self, ref: Any) -> np.ndarray:
        """Read the image of one sample as an HxWx3 uint8 array (any size; the core resizes).

        The default reads ``ref`` as the path of an image file (any format Pillow reads, converted
        to RGB); datasets whose references are something else (a CSV row, a crop box) override it.
        """
        from PIL import Image

        with Image.open(ref) as image:
            return np.asarray(image.convert("RGB"))

    def render(self, split: str) -> tuple[np.ndarray, SampleTable] | None:
        """Produce the pixels of a whole split directly (N x 3 x S x S uint8), for generated datasets.

        Datasets read from files return ``None`` (the default) and are decoded by the core through
        :meth:`read_image`.
        """
        return None

    def read_landmarks(self, split: str) -> np.ndarray | None:
        """The landmarks of every sample of ``split`` in :meth:`table` order: (N, L, 2) float32 (x, y)
        as fractions of the image, edge convention, NaN where missing; None without landmarks.

        Called only for a run whose method needs them, so other runs never pay for reading them.
        """
        return None

    def fingerprint(self) -> str | None:
        """The content identity of the files this dataset reads, for the run id (None: no files).

        The default hashes every split's sample list and labels, the content of every file a sample
        names and of every file at the top of the data root (:func:`nlbench.identity.data_fingerprint`;
        file digests are remembered in the cache folder, so unchanged files are not read again).
        Computed once per instance.
        """
        if self.root is None:
            return None
        if "_fingerprint" not in self.__dict__:
            from nlbench.fileio import cache_home

            digests = FileDigests(self.root, cache_home())
            self.__dict__["_fingerprint"] = data_fingerprint(self.root, ((s, self.table(s)) for s in SPLITS), digests)
        return self.__dict__["_fingerprint"]

    def identity(self) -> dict[str, Any]:
        """What identifies this dataset's content, for the decode cache and the run id."""
        return {
            "name": self.name,
            "version": self.version,
            "root": str(self.root.resolve()) if self.root is not None else None,
            "options": identity_dict(self.options),
            "storage_size": self.storage_size,
        }


def open_dataset(cls: type[Dataset], root: str | None, options: dict[str, Any],
                 memo: dict[tuple, Dataset] | None = None, instance: str | None = None) -> Dataset:
    """The dataset ``instance`` (default: the plugin's own name) of the plugin ``cls`` on ``root``,
    its layout checked (memoised in ``memo``)."""
    instance = instance or cls.name
    key = (cls, instance, root, canonical_json(dict(options)))
    if memo is not None and key in memo:
        return memo[key]
    dataset = cls.__new__(cls)
    dataset.__dict__["_instance"] = instance  # before __init__, so that its messages name the instance
    dataset.__init__(Path(root) if root else None, dict(options))  # type: ignore[misc]
    dataset.check()
    if memo is not None:
        memo[key] = dataset
    return dataset
