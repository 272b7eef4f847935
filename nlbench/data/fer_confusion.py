"""The confusions FER annotators make, measured from FERPlus's votes: the matrix of ``fer-confusion`` noise.

FERPlus gives every FER2013 face ten crowd votes. For each face kept by the FERPlus majority rule,
its votes over the eight emotions are added to the row of its majority class: ``VOTE_COUNTS[c, j]``
is how many votes faces whose majority is class ``c`` received for class ``j``. The off-diagonal
share of a row is where annotators go when they disagree with the majority: fear goes to surprise
(45% of its dissenting votes) and surprise to fear (43%), disgust to anger (34%), sadness to
neutral (63%), contempt to neutral and disgust.

``fer-confusion`` noise at rate r flips each label with probability r, to a class drawn from its
row's off-diagonal shares (so the realised rate is r, and the flips follow human confusions rather
than a uniform draw). The counts below were computed by :func:`vote_counts` from
``fer2013new.csv`` on the faces of the FERPlus subset the project tests with (7,988 faces kept by
the majority rule: 4,835 of Training + PublicTest and the complete PrivateTest split); recompute
them from the full files with ``vote_counts`` if you want every face. Datasets whose classes are
a subset of these eight (RAF-DB, AffectNet-7, synthfer) use the rows and columns of their classes,
found by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nlbench.errors import UsageError

#: The FERPlus classes, in the order of :data:`VOTE_COUNTS`' rows and columns.
CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
#: Votes given to class j (column) by faces whose FERPlus majority is class c (row).
VOTE_COUNTS = np.array([
    [21178, 758, 444, 2718, 651, 215, 145, 556],
    [819, 20945, 463, 88, 82, 50, 39, 75],
    [541, 317, 7524, 94, 114, 29, 858, 28],
    [1397, 117, 94, 6896, 241, 119, 160, 99],
    [443, 182, 380, 211, 4824, 235, 180, 78],
    [26, 4, 9, 29, 43, 197, 3, 11],
    [80, 38, 278, 116, 68, 30, 1122, 5],
    [42, 8, 4, 16, 15, 31, 0, 204],
], dtype=np.int64)
#: Other spellings of the class names that datasets use.
SYNONYMS = {"happy": "happiness", "sad": "sadness", "angry": "anger", "surprised": "surprise",
            "fearful": "fear", "disgusted": "disgust", "neutrality": "neutral"}


def vote_counts(votes: np.ndarray, majority: np.ndarray) -> np.ndarray:
    """``VOTE_COUNTS`` from (N, 8) vote counts and each face's majority class (-1: face dropped)."""
    votes = np.asarray(votes, dtype=np.int64)
    majority = np.asarray(majority, dtype=np.int64)
    k = votes.shape[1]
    counts = np.zeros((k, k), dtype=np.int64)
    kept = majority >= 0
    np.add.at(counts, majority[kept], votes[kept])
    return counts


def flip_targets(class_names: Sequence[str]) -> np.ndarray:
    """Row-stochastic K x K matrix of where a flipped label goes (zero diagonal), for these classes."""
    index = []
    for name in class_names:
        key = SYNONYMS.get(name.lower(), name.lower())
        if key not in CLASSES:
            raise UsageError(
                f"noise mode fer-confusion knows the eight FERPlus emotions ({', '.join(CLASSES)}); this dataset has "
                f"class {name!r}. Use another noise mode (flip, pair, instance) or a noise file.")
        index.append(CLASSES.index(key))
    sub = VOTE_COUNTS[np.ix_(index, index)].astype(np.float64)
    np.fill_diagonal(sub, 0.0)
    rows = sub.sum(axis=1, keepdims=True)
    # A class whose voters never named another of these classes flips uniformly.
    uniform = (np.ones_like(sub) - np.eye(len(index))) / max(1, len(index) - 1)
    return np.where(rows > 0, sub / np.where(rows > 0, rows, 1.0), uniform)
