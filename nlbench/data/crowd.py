"""Crowd truth inference: the label of each item from several annotators' votes, and each annotator's expertise.

Three methods, each a function of a :class:`Votes` table:

* :func:`majority`: the most voted label; confidence = its share of the item's votes.
* :func:`pm`: the PM method as the CCT paper states it (Section IV.A.b, built its FEC test set):
  every annotator starts with expertise e_a = 1; then, until nothing changes,
  (i) v*_i = argmax_v sum_a e_a 1[v = v_i^a] (a majority weighted by expertise),
  (ii) e_a = -log(errors_a / max_b errors_b), errors_a = how many of a's votes differ from v*.
  Edge cases, which the paper leaves open: an annotator with no error would get infinite
  expertise; it is counted as half an error (e_a = log(2 max_b errors_b)). When every annotator
  has the same number of errors (all e_a = 0), or a weighted vote ties, the plain vote count
  decides, then the label order. Confidence = the winner's share of the item's
  expertise-weighted votes.
  Measured on simulated crowds (tests/test_crowd.py): normalised by the *maximum*, as the paper
  writes it, the weights can run away: the annotator with the fewest errors weighs more, agrees
  with the labels it now decides, gets fewer errors, and ends up deciding alone (with 16
  equally skilled annotators PM falls 15 points below majority vote). ``normaliser="sum"``
  (e_a = -log(errors_a / sum_b errors_b), the form of CRH, Li et al. SIGMOD 2014, which the PM
  references follow) keeps the weights relative and does not run away; it is an option, the
  paper's form stays the default.
* :func:`dawid_skene`: Dawid & Skene (1979) by EM: class priors and one confusion matrix per
  annotator, started from the majority's vote shares, additive smoothing 0.01 so that an
  unseen (class, vote) pair is unlikely but possible. Written here (about 30 lines of numpy)
  rather than taken from crowd-kit, which would bring scikit-learn and its other dependencies
  for one EM loop. Confidence = the posterior of the chosen label; expertise = the annotator's
  estimated accuracy sum_k prior_k * confusion_a[k, k].

"None of the above" votes (``none``, ``none of the above``, ``nota``) are a label during
inference, as the annotators meant them; items whose inferred label is "none" are dropped from
the output, as the paper discarded 546 of its 5,257 FEC images.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlbench.errors import DataError, UsageError

NONE_LABELS = ("none", "none of the above", "none_of_the_above", "nota")
METHODS = ("pm", "majority", "dawid-skene")


@dataclass
class Votes:
    """Votes in long form, as integer codes: vote n is annotator ``annotator[n]`` giving ``label[n]`` to ``item[n]``."""

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    item_names: list[str]
    annotator_names: list[str]
    label_names: list[str]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(items, annotators, labels)."""
        return len(self.item_names), len(self.annotator_names), len(self.label_names)

    def counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """(items, labels) vote counts, each vote weighted by its annotator's weight if given."""
        items, _, labels = self.shape
        out = np.zeros((items, labels))
        w = np.ones(len(self.item)) if weights is None else np.asarray(weights, dtype=np.float64)[self.annotator]
        np.add.at(out, (self.item, self.label), w)
        return out

    @property
    def none_label(self) -> int | None:
        """The code of the "none of the above" label, if any vote used it."""
        return next((i for i, n in enumerate(self.label_names) if n.lower() in NONE_LABELS), None)


@dataclass
class Inference:
    """Inferred labels (codes into ``Votes.label_names``), their confidence and each annotator's expertise."""

    labels: np.ndarray
    confidence: np.ndarray
    expertise: np.ndarray
    errors: np.ndarray
    iterations: int


def from_triples(rows: Sequence[tuple[str, str, str]], label_order: Sequence[str] | None = None) -> Votes:
    """A :class:`Votes` table from (item, annotator, label) strings; ``label_order`` fixes the label codes."""
    items: dict[str, int] = {}
    annotators: dict[str, int] = {}
    labels: dict[str, int] = {name: i for i, name in enumerate(label_order or ())}
    codes = []
    for item, annotator, label in rows:
        if label not in labels:
            if label_order is not None and label.lower() not in NONE_LABELS:
                raise DataError(f"label {label!r} is not one of {', '.join(label_order)}.")
            labels[label] = len(labels)
        codes.append((items.setdefault(item, len(items)), annotators.setdefault(annotator, len(annotators)),
                      labels[label]))
    array = np.asarray(codes, dtype=np.int64).reshape(-1, 3)
    return Votes(array[:, 0], array[:, 1], array[:, 2], list(items), list(annotators), list(labels))


#: The largest crowd CSV read (its votes are held in memory).
MAX_CSV_BYTES = 4 * 2**30


def _read_csv(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """The header (stripped, lower case) and rows of a CSV, or one clear error naming the ``what`` file."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, /dev/zero, a pipe: would never end or not be a CSV
        raise DataError(f"{what} file {path} is not a regular file; give the path of a CSV file.")
    if path.is_file() and path.stat().st_size > MAX_CSV_BYTES:
        raise DataError(f"{what} file {path} is {path.stat().st_size / 2**30:.1f} GiB; nlbench reads crowd files of "
                        f"at most {MAX_CSV_BYTES // 2**30} GiB.")
    try:
        # utf-8-sig: a byte-order mark (spreadsheet programs write one) is not part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            return header, list(reader)
    except csv.Error as err:
        raise DataError(f"{what} file {path} is not a readable CSV ({err}).") from None
    except FileNotFoundError:
        raise UsageError(f"{what} file {str(path)!r} does not exist.") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{what} file {path} is not UTF-8 text ({err.reason}).") from None
    except OSError as err:
        raise DataError(f"cannot read {what} file {path}: {err.strerror or err}.") from None


def read_votes(path: Path) -> Votes:
    """Votes from a long-form CSV: a header with item, annotator and label columns, one vote per row."""
    header, rows = _read_csv(path, "votes")
    missing = [c for c in ("item", "annotator", "label") if c not in header]
    if missing:
        raise DataError(f"votes file {path} needs a header with the columns item, annotator and label "
                        f"(one vote per row); missing: {', '.join(missing)} (found {', '.join(header) or 'nothing'}).")
    where = [header.index(c) for c in ("item", "annotator", "label")]
    triples, skipped = [], 0
    for number, row in enumerate(rows, start=2):
        if not any(field.strip() for field in row):
            continue
        if len(row) < len(header):
            raise DataError(f"votes file {path} line {number}: {len(row)} fields, the header has {len(header)}.")
        item, annotator, label = (row[i].strip() for i in where)
        if not item or not annotator:
            raise DataError(f"votes file {path} line {number}: empty item or annotator.")
        if not label:
            skipped += 1  # an annotator who gave no answer
            continue
        triples.append((item, annotator, label))
    if not triples:
        raise DataError(f"votes file {path} holds no votes.")
    return from_triples(triples)


def _decide(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Argmax per row of ``primary``; ties broken by ``secondary``, then by the lowest label code."""
    best = primary.max(axis=1, keepdims=True)
    tied = np.isclose(primary, best, rtol=1e-12, atol=1e-12)
    return np.where(tied, secondary, -np.inf).argmax(axis=1)


def majority(votes: Votes) -> Inference:
    """Plain majority vote (ties: lowest label code)."""
    counts = votes.counts()
    labels = _decide(counts, np.zeros_like(counts))
    errors = _errors(votes, labels)
    return Inference(labels, counts[np.arange(len(labels)), labels] / counts.sum(axis=1),
                     1.0 - errors / np.maximum(1, np.bincount(votes.annotator, minlength=votes.shape[1])),
                     errors, 1)


def _errors(votes: Votes, labels: np.ndarray) -> np.ndarray:
    """How many of each annotator's votes differ from ``labels``."""
    wrong = (votes.label != labels[votes.item]).astype(np.float64)
    return np.bincount(votes.annotator, weights=wrong, minlength=votes.shape[1])


PM_NORMALISERS = ("max", "sum")


def pm_expertise(errors: np.ndarray, normaliser: str = "max") -> np.ndarray:
    """Step (ii) of PM: e_a = -log(errors_a / max errors) (or / sum), an annotator without errors counted as half an error."""
    if normaliser not in PM_NORMALISERS:
        raise UsageError(f"unknown PM normaliser {normaliser!r}; choose max (the paper's) or sum.")
    errors = np.asarray(errors, dtype=np.float64)
    scale = (errors.max() if normaliser == "max" else errors.sum()) if errors.size else 0.0
    if scale == 0:
        return np.ones_like(errors)  # nobody erred: everyone stays as trusted as at the start
    return -np.log(np.maximum(errors, 0.5) / scale)


def pm(votes: Votes, max_iterations: int = 100, normaliser: str = "max") -> Inference:
    """The PM method (module docstring): expertise-weighted majority and expertise, iterated to a fixed point."""
    plain = votes.counts()
    expertise = np.ones(votes.shape[1])
    labels = np.full(votes.shape[0], -1)
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (reported after the loop)
        new = _decide(votes.counts(expertise), plain)
        errors = _errors(votes, new)
        new_expertise = pm_expertise(errors, normaliser)
        if np.array_equal(new, labels) and np.allclose(new_expertise, expertise):
            break
        labels, expertise = new, new_expertise
    weighted = votes.counts(expertise)
    total = weighted.sum(axis=1)
    share = np.where(total > 0, weighted[np.arange(len(labels)), labels] / np.where(total > 0, total, 1), 0.0)
    return Inference(labels, share, expertise, _errors(votes, labels), iteration)


def dawid_skene(votes: Votes, max_iterations: int = 200, tolerance: float = 1e-7, smoothing: float = 0.01) -> Inference:
    """Dawid-Skene by EM (module docstring)."""
    items, annotators, k = votes.shape
    counts = votes.counts()
    posterior = counts / counts.sum(axis=1, keepdims=True)
    one_hot = np.zeros((len(votes.item), k))
    one_hot[np.arange(len(votes.item)), votes.label] = 1.0
    previous = -np.inf
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (reported after the loop)
        prior = (posterior.sum(axis=0) + smoothing) / (items + k * smoothing)
        confusion = np.full((annotators, k, k), smoothing)
        # confusion[a, true, given] += posterior[i, true] for every vote (i, a, given)
        np.add.at(confusion, votes.annotator, posterior[votes.item][:, :, None] * one_hot[:, None, :])
        confusion /= confusion.sum(axis=2, keepdims=True)
        log_post = np.tile(np.log(prior), (items, 1))
        np.add.at(log_post, votes.item, np.log(confusion[votes.annotator, :, votes.label]))
        likelihood = np.logaddexp.reduce(log_post, axis=1)
        posterior = np.exp(log_post - likelihood[:, None])
        total = float(likelihood.sum())
        if abs(total - previous) < tolerance * max(1.0, abs(total)):
            break
        previous = total
    labels = _decide(posterior, counts)
    accuracy = np.einsum("k,akk->a", prior, confusion)
    return Inference(labels, posterior[np.arange(items), labels], accuracy, _errors(votes, labels), iteration)


def infer(votes: Votes, method: str, pm_normaliser: str = "max") -> Inference:
    """Run one of :data:`METHODS`."""
    if method not in METHODS:
        raise UsageError(f"unknown crowd method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "pm":
        return pm(votes, normaliser=pm_normaliser)
    return {"majority": majority, "dawid-skene": dawid_skene}[method](votes)


def kept_items(votes: Votes, result: Inference) -> np.ndarray:
    """Indices of the items whose inferred label is not "none of the above"."""
    none = votes.none_label
    return np.arange(len(result.labels)) if none is None else np.flatnonzero(result.labels != none)


def write_labels(path: Path, votes: Votes, result: Inference) -> int:
    """Write item,label,confidence for the kept items (and the annotators' file beside it); returns how many."""
    from nlbench.fileio import atomic_write_bytes

    keep = kept_items(votes, result)
    rows = [(votes.item_names[i], votes.label_names[result.labels[i]], f"{result.confidence[i]:.4f}") for i in keep]
    atomic_write_bytes(Path(path), _csv_bytes(("item", "label", "confidence"), rows))
    per_annotator = np.bincount(votes.annotator, minlength=votes.shape[1])
    experts = [(name, f"{result.expertise[a] + 0.0:.4f}", int(result.errors[a]), int(per_annotator[a]))
               for a, name in enumerate(votes.annotator_names)]
    atomic_write_bytes(annotators_path(Path(path)), _csv_bytes(("annotator", "expertise", "errors", "votes"), experts))
    return len(keep)


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    """CSV text (quoted where needed) of a header and rows."""
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def annotators_path(labels_path: Path) -> Path:
    """Where the annotators' expertise is written next to a labels file."""
    return labels_path.with_name(labels_path.stem + ".annotators.csv")


def read_truth(path: Path) -> dict[str, str]:
    """item -> true label from a CSV with item and label columns."""
    header, rows = _read_csv(path, "truth")
    if "item" not in header or "label" not in header:
        raise DataError(f"truth file {path} needs the columns item and label (found {', '.join(header) or 'nothing'}).")
    item, label = header.index("item"), header.index("label")
    truth = {}
    for number, row in enumerate(rows, start=2):
        if not any(field.strip() for field in row):
            continue
        if len(row) <= max(item, label):
            raise DataError(f"truth file {path} line {number}: {len(row)} fields, the header has {len(header)}.")
        truth[row[item].strip()] = row[label].strip()
    return truth


def accuracy(votes: Votes, result: Inference, truth: dict[str, str]) -> tuple[float, int]:
    """Share (%) of the items with a known truth whose inferred label is right, and how many were scored."""
    scored = [(votes.label_names[result.labels[i]], truth[name]) for i, name in enumerate(votes.item_names)
              if name in truth]
    if not scored:
        raise DataError("no item of the votes file is in the truth file.")
    return 100.0 * sum(a == b for a, b in scored) / len(scored), len(scored)


# ---------------------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class CrowdDesign:
    """A crowd with known truth: annotator kinds (shares), their skill, item difficulty, votes per item."""

    items: int = 1000
    classes: int = 7
    annotators: int = 16
    votes_per_item: int = 5
    #: Shares of expert, ordinary, spammer (random votes) and adversarial (a fixed wrong class) annotators.
    experts: float = 0.25
    ordinary: float = 0.40
    spammers: float = 0.25
    adversarial: float = 0.10
    expert_accuracy: float = 0.9
    ordinary_accuracy: float = 0.6
    #: Mean of the Beta-distributed item difficulty: the chance that a vote on the item is a guess.
    difficulty: float = 0.2
    seed: int = 1


def simulate(design: CrowdDesign, class_names: Sequence[str] | None = None
             ) -> tuple[list[tuple[str, str, str]], dict[str, str], list[tuple[str, str]]]:
    """Votes, truth and annotator kinds of a simulated crowd (reproducible from ``design.seed``)."""
    d = design
    if d.votes_per_item > d.annotators:
        raise UsageError(f"--votes-per-item ({d.votes_per_item}) cannot exceed --annotators ({d.annotators}).")
    if d.classes < 2 or d.items < 1 or d.votes_per_item < 1:
        raise UsageError("a crowd needs at least 2 classes, 1 item and 1 vote per item.")
    shares = np.asarray([d.experts, d.ordinary, d.spammers, d.adversarial], dtype=np.float64)
    if (shares < 0).any() or shares.sum() <= 0:
        raise UsageError("annotator shares must be non-negative and not all zero.")
    names = list(class_names) if class_names else [f"class{c}" for c in range(d.classes)]
    rng = np.random.default_rng(d.seed)
    counts = np.floor(shares / shares.sum() * d.annotators).astype(int)
    counts[0] += d.annotators - counts.sum()  # the remainder are experts
    kinds = np.repeat(np.array(["expert", "ordinary", "spammer", "adversarial"]), counts)
    accuracy = np.select([kinds == "expert", kinds == "ordinary"], [d.expert_accuracy, d.ordinary_accuracy], 0.0)
    wrong_class = rng.integers(1, d.classes, size=d.annotators)  # adversarial: truth + offset
    truth = rng.integers(0, d.classes, size=d.items)
    spread = 8.0
    difficulty = rng.beta(d.difficulty * spread, (1 - d.difficulty) * spread, size=d.items)
    votes = []
    for i in range(d.items):
        for a in rng.choice(d.annotators, size=d.votes_per_item, replace=False):
            if kinds[a] == "spammer" or rng.random() < difficulty[i]:
                label = int(rng.integers(0, d.classes))
            elif kinds[a] == "adversarial":
                label = int((truth[i] + wrong_class[a]) % d.classes)
            elif rng.random() < accuracy[a]:
                label = int(truth[i])
            else:
                label = int((truth[i] + rng.integers(1, d.classes)) % d.classes)
            votes.append((f"item{i:05d}", f"annotator{a:02d}", names[label]))
    truth_map = {f"item{i:05d}": names[t] for i, t in enumerate(truth)}
    return votes, truth_map, [(f"annotator{a:02d}", str(kinds[a])) for a in range(d.annotators)]
