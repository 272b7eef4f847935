"""Published noise lists: the noisy-label files official repositories ship, known by the sha256 of their bytes.

Papers on noisy-label facial expression recognition publish the noisy training labels they used
(EAC's ``noise01/02/03.txt``, ReSup's ``RAFlabel/*noise_train1.txt``, SCN's ``0.1/0.2noise_train.txt``).
Given as ``--noise-file``, such a list is recognised here by its sha256, so

* the run's recorded noise note names its origin (``EAC noise 30%``, repository, commit, path);
* tables and figures label its runs by that name instead of ``file <sha256 prefix>``;
* the share of labels it changes on the run's data is checked against the share it changes on the
  dataset's official clean labels (counted when the entry was recorded), and a mismatch warns: the
  labels trained on are then not the ones the paper trained on.

Only hashes, counts and addresses are kept: none of these repositories states a licence and the
labels derive from RAF-DB, which its authors release only by agreement, so nlbench ships none of the files.
The run id is untouched: it already holds the file's sha256 (:class:`nlbench.spec.runspec.NoiseSpec`),
and recognition only adds a note to the result and a name to the tables.

Only the bytes as published are known: a copy whose line endings were converted (``git`` with
``core.autocrlf``) is another file, with another sha256 and another run id, and is shown by its hash.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass


class PublishedNoiseWarning(UserWarning):
    """A recognised published list changes another share of labels than on the data it was made for."""


#: What every entry says of its licence: none of the repositories states one.
NO_LICENCE = ("no licence stated in the repository (so all rights reserved); the labels derive from RAF-DB, "
              "which its authors release only by agreement, for non-commercial research")


@dataclass(frozen=True)
class PublishedList:
    """One published noise list: where it comes from and what it does to the dataset's clean labels."""

    #: The name tables show (unique; never starting with a digit, which tables read as an injected rate).
    label: str
    #: The nlbench dataset (plugin name) whose samples it labels.
    dataset: str
    #: The rate the publisher names it by (None: not one rate, e.g. class-dependent noise).
    nominal_rate: float | None
    #: Training samples it labels (its rows of the dataset's training split).
    train_rows: int
    #: How many of those labels differ from the dataset's official clean labels.
    flips: int
    #: Lines of the file (training rows, and test rows where it lists both splits).
    rows: int
    #: First class number in the file (1: RAF-DB's own lists; 0: SCN's), as ``--noise-file-base`` takes it.
    label_base: int
    repo: str
    #: A commit of ``repo`` holding the file with exactly these bytes.
    commit: str
    path: str
    #: SHA-256 of the file's bytes as published.
    sha256: str
    licence: str = NO_LICENCE
    #: Whether nlbench may ship the file itself (False: only its hash and address).
    redistributable: bool = False
    #: What else one should know (format, rows of the other split, class-dependent rates).
    note: str = ""

    @property
    def rate(self) -> float:
        """The share of the training labels it changes on the dataset's official clean labels."""
        return self.flips / self.train_rows

    @property
    def url(self) -> str:
        """Where the exact bytes can be downloaded."""
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"

    def origin(self) -> str:
        """Its name and source in one line, for the run's noise note."""
        return f"{self.label} ({self.path} of {self.repo} at {self.commit[:7]})"


_EAC = ("zyh-uaiaaaa/Erasing-Attention-Consistency", "61efdfd373b6d2fe7c6d31712427aa263f72900d")
_RESUP = ("purpleleaves007/FERDenoise", "0eb4353ec7d81a5da9519d12a9f70f4f6e56c4ae")
_SCN = ("kaiwang960112/Self-Cure-Network", "9f4c3ad80ff29c7eaaac3d1b283a456d3f23a587")
_RAFDB_TRAIN = 12271  # training images of RAF-DB basic (list_patition_label.txt's train_ rows)

_EAC_NOTE = "'train_00001.jpg 5' lines, labels 1..7, training rows only, in list_patition_label.txt's order"
_RESUP_NOTE = ("'train_00001.jpg 5' lines, labels 1..7, both splits (test rows are ignored: nlbench tests on "
               "the clean test labels)")
_SCN_NOTE = ("absolute paths of the author's machine ending in train_00001_aligned.jpg (matched by file name), "
             "labels 0..6: give --noise-file-base 0")

#: The published lists nlbench knows. Counts were taken against EAC's copy of RAF-DB's
#: list_patition_label.txt (sha256 3890ab2d...), the clean labels the rafdb plugin reads.
PUBLISHED: tuple[PublishedList, ...] = (
    PublishedList("EAC noise 10%", "rafdb", 0.1, _RAFDB_TRAIN, 1241, 12271, 1, *_EAC, "raf-basic/EmoLabel/noise01.txt",
                  "b452aca82ca7d2b9e62306e4513cca92aa32766ed47ed4137d61dd737155449a", note=_EAC_NOTE),
    PublishedList("EAC noise 20%", "rafdb", 0.2, _RAFDB_TRAIN, 2498, 12271, 1, *_EAC, "raf-basic/EmoLabel/noise02.txt",
                  "04d8c16247bd1dacdad9e5de880dca53f6b79e71aa919ed749b93a489e3cf8ac", note=_EAC_NOTE),
    PublishedList("EAC noise 30%", "rafdb", 0.3, _RAFDB_TRAIN, 3722, 12271, 1, *_EAC, "raf-basic/EmoLabel/noise03.txt",
                  "bb2f536c87af0b20d16b8e48945c3d6220fad0b4d4ee39b8b99f2007745dbe58", note=_EAC_NOTE),
    PublishedList("RAF-DB clean labels (EAC's copy)", "rafdb", 0.0, _RAFDB_TRAIN, 0, 15339, 1, *_EAC,
                  "raf-basic/EmoLabel/list_patition_label.txt",
                  "3890ab2daf1f2cf8b642197be016e643895faa8295dd83620d0a6a535fa0c1c3",
                  note="RAF-DB's own label list (both splits); the copy in the RAF-DB archive may differ in bytes"),
    PublishedList("ReSup noise 0%", "rafdb", 0.0, _RAFDB_TRAIN, 0, 15339, 1, *_RESUP, "RAFlabel/0.0noise_train1.txt",
                  "f80281d55f79898e478f46084ed7632737108286fb55a229709197bfe80ac45e",
                  note=_RESUP_NOTE + "; CRLF line endings, else the same lines as list_patition_label.txt"),
    PublishedList("ReSup noise 10%", "rafdb", 0.1, _RAFDB_TRAIN, 1227, 15339, 1, *_RESUP, "RAFlabel/0.1noise_train1.txt",
                  "6726efa80b5aa658e9a1923530148a17f577ffe79d9926c25cf9c8ced51f6228", note=_RESUP_NOTE),
    PublishedList("ReSup noise 20%", "rafdb", 0.2, _RAFDB_TRAIN, 2491, 15339, 1, *_RESUP, "RAFlabel/0.2noise_train1.txt",
                  "5d84acfae33ff6d71c1b61ddb1eb89f46ce13894a822c8e14027a09d3a47416c", note=_RESUP_NOTE),
    PublishedList("ReSup noise 30%", "rafdb", 0.3, _RAFDB_TRAIN, 3613, 15339, 1, *_RESUP, "RAFlabel/0.3noise_train1.txt",
                  "11ab9cbc547b41d6fe6b8e3f135f2a57329be47c4c9a3c0beaffb0e202ba63fa", note=_RESUP_NOTE),
    PublishedList("ReSup noise 40%", "rafdb", 0.4, _RAFDB_TRAIN, 4907, 15339, 1, *_RESUP, "RAFlabel/0.4noise_train1.txt",
                  "e8bb004d78ec09b6cc470de5de45f81d488b9a574ff6bcc4d7bdc7055b438eb3", note=_RESUP_NOTE),
    PublishedList("ReSup noise 50%", "rafdb", 0.5, _RAFDB_TRAIN, 6099, 15339, 1, *_RESUP, "RAFlabel/0.5noise_train1.txt",
                  "6ecb620c731e07fcaedf6f7bdafecdf06222170399a52205a22628e556fe3c77", note=_RESUP_NOTE),
    PublishedList("ReSup class-dependent noise", "rafdb", None, _RAFDB_TRAIN, 1417, 15339, 1, *_RESUP,
                  "RAFlabel/usnoise_train1.txt", "e5ce93d15b26a6d8a85b7099d75e3aa2dc818b08f0fb4898d26b97dba2f748cc",
                  note=_RESUP_NOTE + "; CRLF line endings; per class: surprise 10%, fear 49.8%, disgust 30%, "
                                     "happiness 0%, sadness 40%, anger 20%, neutral 0%"),
    PublishedList("SCN noise 10%", "rafdb", 0.1, _RAFDB_TRAIN, 1271, 12271, 0, *_SCN, "0.1noise_train.txt",
                  "7362af9759551a9be5c863565df8701118811c2a7f324818f035cac916d7ff8f", note=_SCN_NOTE),
    PublishedList("SCN noise 20%", "rafdb", 0.2, _RAFDB_TRAIN, 2487, 12271, 0, *_SCN, "0.2noise_train.txt",
                  "5470f033b1a4cb807f92068aae784635d52d4bb2d19397f7a2e280f4723cb842", note=_SCN_NOTE),
    PublishedList("SCN clean labels", "rafdb", 0.0, _RAFDB_TRAIN, 0, 12271, 0, *_SCN, "train.txt",
                  "cf3187b5f702729c75920f2598a6051f9f0c5ebec9d7cc97329f0c501b63ce9f",
                  note=_SCN_NOTE + "; CRLF line endings; the list SCN's generate.py flips"),
)


def find(sha256: str | None) -> PublishedList | None:
    """The published list whose bytes hash to ``sha256``, or None for any other file."""
    if not sha256:
        return None
    return next((entry for entry in PUBLISHED if entry.sha256 == sha256.lower()), None)


def rate_tolerance(entry: PublishedList, samples: int) -> float:
    """How far the realised rate may lie from the list's own rate when the run's data has ``samples`` of its rows.

    The list's labels are fixed, so on all its training rows the same clean labels give exactly its
    number of flips (half a sample: only rounding). On a subset (images missing on disk) the rate
    moves by which samples are left: three standard errors of a random draw of ``samples`` of the
    ``train_rows`` without replacement (hypergeometric), which a subset not chosen by label passes
    about 997 times in 1000."""
    n, total, p = max(int(samples), 1), entry.train_rows, entry.rate
    finite = max(total - n, 0) / (total - 1) if total > 1 else 0.0
    return 3.0 * math.sqrt(p * (1.0 - p) / n * finite) + 0.5 / n


def rate_problem(entry: PublishedList, realised: float, samples: int) -> str | None:
    """Why the realised rate does not fit the list (None when it does)."""
    tolerance = rate_tolerance(entry, samples)
    if abs(realised - entry.rate) <= tolerance:
        return None
    return (f"it changes {100 * realised:.2f}% ({round(realised * samples):,} of {samples:,}) of the training labels "
            f"here, not the {100 * entry.rate:.2f}% ({entry.flips:,} of {entry.train_rows:,}) it changes on "
            f"{entry.dataset}'s official clean labels (allowed: {100 * tolerance:.2g} points, for {samples:,} of its "
            f"{entry.train_rows:,} training rows)")


def recognise(sha256: str | None, realised: float, samples: int, name: str) -> str:
    """The note's words on a published list (empty for other files); warns when its rate does not fit."""
    entry = find(sha256)
    if entry is None:
        return ""
    problem = rate_problem(entry, realised, samples)
    if problem is None:
        return f": {entry.origin()}"
    warnings.warn(
        f"noise file {name} is {entry.label}: {problem}, so these are not the labels it was published with. "
        f"Check the dataset's clean labels and class order, and --noise-file-base (this list counts classes "
        f"from {entry.label_base}).", PublishedNoiseWarning, stacklevel=2)
    return f": {entry.origin()}; WARNING: {problem}"


def table_label(sha256: str | None) -> str | None:
    """The name tables give runs on a published list (None for other files)."""
    entry = find(sha256)
    return entry.label if entry is not None else None
