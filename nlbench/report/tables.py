"""Comparison tables from stored runs, in the layouts of the CCT paper's tables.

:func:`collect` reads one row per finished run (each (spec, seed) once) with the chosen score of
the chosen model under the chosen selection rule; :func:`build_table` groups the rows of one
layout into cells, mean ± sample std over seeds; :func:`render` prints them. Layouts:

- ``table1``: rows noise x method, columns datasets: every run (the paper's Table 1);
- ``table2``: real noisy training labels (``--noise-source dataset``): rows methods;
- ``table3``: clean training labels (noise 0): rows methods;
- ``table8``: CCT only: rows dataset x noise, columns networks 1-4 x consistency off/on;
- ``cross``: rows training dataset x noise x method, columns the run's own test split ("own test")
  and every dataset its stored model was evaluated on (``nlbench evaluate``, stored beside the run).

Runs that differ in a setting get their own row, labelled with their value of it (every value,
the configured one too), and only where they exist; runs on another test split get their own
column. A setting that is the same in every run shown is not a difference (it goes in the
caption). Under the rows: the majority-class and chance scores of each column's test split
(:mod:`nlbench.report.references`). Cells without runs are shown as missing, never dropped; the
best mean of each group is bold.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nlbench.catalogue import METHOD_ORDER, PAPER_DATASETS
from nlbench.report.references import dominant_prediction, fold_of, split_key, split_reference
from nlbench.report.runs import Filters, RunSet, read_runs, test_set_labels, variant_labels
from nlbench.train.model_selection import SCORES

FORMATS = ("rich", "markdown", "latex", "csv")
LAYOUTS = ("table1", "table2", "table3", "table8", "cross")
ALL_SCORES = ("accuracy", *SCORES)
MISSING = "–"
METRIC_TEXT = {
    "last": "the last epoch",
    "lastk": "the mean of the last k epochs",
    "val": "the epoch with the best accuracy on the held-out noisy validation split (no test data)",
    "best": "the best epoch selected on the test set: an ORACLE, optimistic, as the paper reports",
}
SCORE_TEXT = {"accuracy": "Test accuracy (%)", "balanced_accuracy": "Balanced (mean-class) test accuracy (%)",
              "macro_f1": "Macro-F1 on the test set (%)",
              "ece": "Expected calibration error on the test set (%, lower is better)"}
#: The title of each layout, in tables and as the report's section headings.
TITLES = {"table1": "Table 1: label noise", "table2": "Table 2: real noisy labels",
          "table3": "Table 3: clean labels", "table8": "Table 8: CCT networks x consistency",
          "cross": "Cross-dataset: trained on one dataset, tested on others"}
#: The column of the cross layout that holds each run's own test split.
OWN_TEST = "own test"
#: Hyperparameters that are a layout's columns, hence never a row variant.
AXES = {"table8": ("networks", "consistency")}


# -- rows: one per finished run ------------------------------------------------------------
def _summary(metrics: dict[str, Any], key: str) -> dict[str, Any] | None:
    return metrics.get("model") if key == "model" else metrics.get("members", {}).get(key)


def _value(summary: dict[str, Any] | None, metric: str, score: str) -> float | None:
    if not summary:
        return None
    if score == "accuracy":
        value = summary.get(metric)
    else:
        value = summary.get("scores", {}).get(metric, {}).get(score)
    return None if value is None else float(value)


def collect(runs: RunSet, metric: str = "last", member: str = "model", score: str = "accuracy",
            lacking: Counter | None = None) -> pd.DataFrame:
    """One row per finished run of ``runs`` (:func:`nlbench.report.runs.read_runs`) with the chosen value.

    ``member`` is ``model`` (the deployable model, plus the models a method shows beside it, e.g.
    CCT's teachers' ensemble), ``single`` (the one network a method declares: net1 of the
    co-training methods, CCT's student) or a stored member key such as ``train/ensemble``. Runs
    without the requested value (e.g. ``val`` of a run that held out no validation split) are
    counted in ``lacking``.
    """
    records = []
    for run in runs.runs:
        path, result = run.path, run.result
        metrics = result["metrics"]
        deployment = result.get("deployment") or {}
        shown: list[tuple[str, str]] = []  # (suffix of the method label, member key)
        if member == "model":
            shown.append(("", "model"))
            shown += [(f": {label}", key) for label, key in (deployment.get("beside") or {}).items()]
        elif member == "single":
            shown.append(("", deployment.get("single", "model")))
        else:
            shown.append(("", member))
        for suffix, key in shown:
            value = _value(_summary(metrics, key), metric, score)
            if value is None:
                if lacking is not None and not suffix:
                    lacking[result.method] += 1
                continue
            records.append({
                "path": str(path), "run_id": result.run_id, "dataset": result.dataset,
                "method": result.method, "suffix": suffix, "noise": run.noise,
                "noise_rate": result["noise"]["rate"], "source": result["noise"].get("source", "injected"),
                "realised_rate": result["noise"].get("realised_rate"), "seed": result.seed, "value": value,
                "k": (_summary(metrics, key) or {}).get("k"), "hparams": result.get("hparams", {}),
                "train": result.get("train", {}),
                "pretrained": (result.get("pretrained") or {}).get("sha256") or "",
                "pretrained_name": Path((result.get("pretrained") or {}).get("path") or "").name,
                "deploys": deployment.get("deploys", "the model"), "member_key": key,
                "cost": result.get("cost", {}),
                "dataset_options": result.get("dataset_options", {}), "split": split_key(result),
                "fold": (fold_of(result) or (0, 0))[0], "reference": split_reference(result),
                "dominant": dominant_prediction(result, key),
            })
    return pd.DataFrame.from_records(records)


# -- layouts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Which runs a layout shows and where: a row key and a column of every run."""

    name: str
    row_names: tuple[str, ...]
    keep: Callable[[Any], bool]
    row: Callable[[Any], tuple[str, ...]]
    column: Callable[[Any], str]
    #: Whether rows are methods (so --compare and ranks apply).
    method_rows: bool = True


def _table8_column(row: Any) -> str:
    # Results stored before an option existed ran with its default (3 networks, consistency on).
    networks = int(row.hparams.get("networks", 3))
    consistent = row.hparams.get("consistency", True) is not False and networks > 1  # one network: no peer
    return f"{networks}{'+' if consistent else '-'}"


LAYOUT_SPECS = {
    "table1": Layout("table1", ("noise %", "method"), lambda r: True, lambda r: (r.noise, r.variant),
                     lambda r: r.test_set),
    "table2": Layout("table2", ("method",), lambda r: r.source == "dataset", lambda r: (r.variant,),
                     lambda r: r.test_set),
    "table3": Layout("table3", ("method",), lambda r: r.source == "injected" and r.noise_rate == 0,
                     lambda r: (r.variant,), lambda r: r.test_set),
    "table8": Layout("table8", ("dataset", "noise %", "model"), lambda r: r.method == "cct",
                     lambda r: (r.test_set, r.noise, r.variant), _table8_column, method_rows=False),
    # The stored model only: the models a method shows beside it were never evaluated elsewhere.
    "cross": Layout("cross", ("trained on", "noise %", "method"), lambda r: r.suffix == "",
                    lambda r: (r.dataset, r.noise, r.variant), lambda r: r.evaluated),
}
TABLE8_COLUMNS = ["1-", "1+", "2-", "2+", "3-", "3+", "4-", "4+"]


@dataclass
class ComparisonTable:
    """The aggregated cells of one layout and how to caption them."""

    layout: str
    cells: pd.DataFrame  # columns: row (tuple), column, mean, std, n, seeds, by_seed, + the row parts
    rows: list[tuple[str, ...]]
    row_names: tuple[str, ...]
    columns: list[str]
    caption: str
    title: str = ""
    lower_is_better: bool = False
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)  # the runs behind the cells
    notes: list[str] = field(default_factory=list)
    paper: dict[tuple[tuple[str, ...], str], float] = field(default_factory=dict)
    #: The reference scores of each column's test split (None where runs disagree or record none).
    references: dict[str, Any] = field(default_factory=dict)
    #: Cells with a model that answers one class for most of the test set: one line per run.
    flags: dict[tuple[tuple[str, ...], str], list[str]] = field(default_factory=dict)
    score: str = "accuracy"

    def cell(self, row: tuple[str, ...], column: str) -> Any:
        """The aggregated cell, or None where nothing ran."""
        return self._lookup.get((row, column))

    @functools.cached_property
    def _lookup(self) -> dict[tuple[tuple[str, ...], str], Any]:
        return {(r.row, r.column): r for r in self.cells.itertuples()}


def _method_order(name: str) -> tuple[int, str, bool, str, str]:
    """Paper order; within a method the plain row, then its variants, each followed by the models
    shown beside it (``cct``, ``cct: teachers' ensemble``, ``cct [x=1]``, ``cct [x=1]: ...``)."""
    variant, _, beside = name.partition(": ")
    base = variant.split(" [", 1)[0]
    index = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return (index, base, variant != base, variant, beside)


def _noise_order(label: str) -> tuple[int, float, str]:
    if label.startswith("real"):  # after the injected rates: real noise, then noise files
        return (1, 0.0, label)
    try:
        return (0, float(label.split(" ", 1)[0]), label)
    except ValueError:  # a noise file: "file <sha256 prefix> (...)" or a published list's name
        return (2, 0.0, label)


def _dataset_order(name: str) -> tuple[int, str, str]:
    base = name.split(" [", 1)[0]  # a dataset's other test splits follow it
    return (PAPER_DATASETS.index(base) if base in PAPER_DATASETS else len(PAPER_DATASETS), base, name)


def _code_notes(runs: RunSet) -> list[str]:
    """One note per plugin file that changed since some of the runs shown were trained with it."""
    from nlbench.code_identity import code_changes, stale_text

    by_file: Counter = Counter()
    for run in runs.runs:
        by_file.update(code_changes(run.result))
    return [f"note: {n} run(s) shown were {stale_text([name])} than installed now: `nlbench runs` marks them, "
            f"`nlbench sweep ... --force` (or `nlbench run ... --force`) trains them again."
            for name, n in sorted(by_file.items())]


def _mean_over_folds(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """One row per seed for k-fold runs: the mean over the folds of that seed (then cells average
    over seeds, the usual protocol of small lab datasets). A seed missing folds is noted."""
    if not (frame["fold"] > 0).any():
        return frame
    keys = ["row", "column", "seed", "suffix"]
    folded = frame[frame["fold"] > 0]
    merged = []
    for _, group in folded.groupby(keys, sort=False):
        first = group.iloc[0].copy()
        folds = int(first["dataset_options"].get("folds", 0))
        seen = sorted(set(group["fold"]))
        if len(seen) < folds:
            notes.append(f"note: {first['variant']} on {first['test_set']} seed {first['seed']}: "
                         f"{len(seen)} of {folds} folds finished; its value is the mean of those.")
        first["value"] = float(group["value"].mean())
        merged.append(first)
    return pd.concat([frame[frame["fold"] == 0], pd.DataFrame(merged)], ignore_index=True)


def _row_order(layout: str, row: tuple[str, ...]) -> tuple:
    if layout == "table1":
        return (_noise_order(row[0]), _method_order(row[1]))
    if layout in ("table8", "cross"):
        return (_dataset_order(row[0]), _noise_order(row[1]), _method_order(row[2]))
    return (_method_order(row[0]),)


def _settings_text(frame: pd.DataFrame) -> str:
    """Initialisation, epochs, image size, batch size: the value, or that it varies."""
    def one(column: str, key: str, unit: str = "") -> str:
        values = sorted({json.dumps(t.get(key)) for t in frame[column]})
        shown = [json.loads(v) for v in values]
        return f"{shown[0]}{unit}" if len(shown) == 1 else f"varies ({', '.join(str(v) for v in shown)})"

    files = sorted({(p, n) for p, n in zip(frame["pretrained"], frame["pretrained_name"]) if p}, key=str)
    randoms = any(not p for p in frame["pretrained"])
    init = ", ".join((["random"] if randoms else []) + [f"pretrained file {n or '?'} (sha256 {p[:12]})"
                                                        for p, n in files])
    return (f"Initialisation: {init}; epochs {one('train', 'epochs')}; image {one('train', 'image_size', ' px')}; "
            f"batch {one('train', 'batch_size')}.")


def build_table(runs_dir: Path, metric: str = "last", member: str = "model", run_ids: set[str] | None = None,
                layout: str = "table1", score: str = "accuracy",
                with_paper: bool = False, warn: Callable[[str], None] | None = None,
                filters: Filters | None = None, paper: str = "cct") -> ComparisonTable:
    """Aggregate the finished runs under ``runs_dir`` (those passing ``filters``, or those of
    ``run_ids``) into ``layout``; ``with_paper`` adds the values printed by ``paper`` (the name of
    a file in ``nlbench/report/published/``)."""
    lacking: Counter = Counter()
    if layout == "cross" and (metric != "last" or member != "model"):
        from nlbench.errors import UsageError

        raise UsageError("the cross layout compares the stored model (model.pt: the deployed model of the last "
                         "epoch) on each dataset: use it with --metric last and --member model (the defaults).")
    runs = read_runs(runs_dir, filters, run_ids=run_ids)
    frame = collect(runs, metric, member, score, lacking)
    notes = runs.warnings() + _code_notes(runs)
    if layout == "cross":
        frame = _with_evaluations(frame, runs, score, notes)
    if lacking:
        what = "the val metric (they held out no validation split)" if metric == "val" else f"{member!r} / {score}"
        notes.append(f"note: {sum(lacking.values())} finished run(s) lack {what}: "
                     + ", ".join(f"{m} {n}" for m, n in sorted(lacking.items())))
    spec = LAYOUT_SPECS[layout]
    if not frame.empty:
        frame = frame[[bool(spec.keep(r)) for r in frame.itertuples()]].reset_index(drop=True)
    title = TITLES[layout]
    lower = score == "ece"
    who = {"model": "the deployed model", "single": "one network per method"}.get(member, member)
    if frame.empty:
        caption = f"{SCORE_TEXT[score]} of {who}; selection: {METRIC_TEXT[metric]}."
        return ComparisonTable(layout, pd.DataFrame(columns=["row", "column", "mean", "std", "n", "seeds"]), [],
                               spec.row_names, [], caption, title, lower, frame, notes)
    paths = set(frame["path"])
    shown = [run for run in runs.runs if str(run.path) in paths]
    labels = variant_labels(shown, AXES.get(layout, ()))
    frame["variant"] = [labels[Path(p)] + suffix for p, suffix in zip(frame["path"], frame["suffix"])]
    sets = test_set_labels(shown)
    frame["test_set"] = [sets[Path(p)] for p in frame["path"]]
    frame["row"] = [spec.row(r) for r in frame.itertuples()]
    frame["column"] = [spec.column(r) for r in frame.itertuples()]
    raw = frame  # every run (each fold), for the references and the flags
    frame = _mean_over_folds(frame, notes)
    groups = frame.groupby(["row", "column"], sort=False)
    cells = groups["value"].agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    cells["std"] = [s if n > 1 else math.nan for s, n in zip(cells["std"], cells["n"])]  # ddof = 1
    cells["seeds"] = [" ".join(str(s) for s in sorted(g["seed"])) for _, g in groups]
    cells["by_seed"] = [dict(zip(g["seed"], g["value"])) for _, g in groups]

    if layout == "table8":
        present = set(cells["column"])
        columns = [c for c in TABLE8_COLUMNS if c in present or c[0] in {p[0] for p in present}]
    else:
        columns = sorted(set(cells["column"]), key=lambda c: (c != OWN_TEST, _dataset_order(c)))
    existing = set(cells["row"])
    rows = set(existing)
    if layout == "table1":  # the plain methods get every noise row; variants only where they ran
        plain = {r[1] for r in existing if " [" not in r[1] and ":" not in r[1]}
        rows |= {(noise, method) for noise in {r[0] for r in existing} for method in plain}
    ordered = sorted(rows, key=lambda r: _row_order(layout, r))

    k_text = ""
    if metric == "lastk":
        k_text = f" (k = {', '.join(str(int(k)) for k in sorted(frame['k'].dropna().unique()))})"
    shown_as = frame["deploys"] if member == "model" else frame["member_key"]
    per_method: dict[str, list[str]] = {}
    for m, d, s in zip(frame["method"], shown_as, frame["suffix"]):
        if not s and d not in per_method.setdefault(m, []):
            per_method[m].append(d)
    # a method whose settings change what it deploys (CCT without distillation) lists each
    deploys = [f"{m}: {' or '.join(sorted(d))}" for m, d in sorted(per_method.items(), key=lambda i: _method_order(i[0]))]
    real = sorted({f"{d} {100 * r:.1f}%" for d, r, s in zip(frame["dataset"], frame["realised_rate"], frame["source"])
                   if s == "dataset" and r is not None})
    caption = (
        f"{SCORE_TEXT[score]} of {who} ({'; '.join(deploys)}). Selection: {METRIC_TEXT[metric]}{k_text}. "
        f"Cells: mean ± sample std (ddof = 1) over seeds (number of seeds; one seed shows no std); "
        f"{MISSING} = no finished run. {_settings_text(frame)}"
        + (f" Realised noise of the real labels: {', '.join(real)}." if real else "")
        + (" Columns: N- = N networks without the consistency loss, N+ = with it (1 network: Standard)."
           if layout == "table8" else "")
        + (f" Columns: {OWN_TEST} = each run's own test split (its last epoch); the others = its stored model "
           f"(model.pt) evaluated on that dataset by `nlbench evaluate`, classes matched by name (`nlbench show "
           f"RUN` lists them)." if layout == "cross" else "")
        + f" Runs in {runs_dir}."
    )
    table = ComparisonTable(layout, cells, ordered, spec.row_names, columns, caption, title, lower, frame, notes,
                            score=score)
    _attach_references(table, raw)
    if with_paper and layout != "cross":
        _attach_paper(table, metric, score, paper)
    elif with_paper:
        table.notes.append("note: the paper has no cross-dataset results; --with-paper shows nothing here.")
    if warn is not None:
        for note in notes:
            warn(note)
    return table


def _with_evaluations(frame: pd.DataFrame, runs: RunSet, score: str, notes: list[str]) -> pd.DataFrame:
    """The cross layout's rows: each run's own test row (column ``own test``) plus one row per
    evaluation stored beside it, with that evaluation's ``score`` (:mod:`nlbench.evaluations`)."""
    from nlbench.evaluations import read_evaluations
    from nlbench.report.references import SplitReference

    if frame.empty:
        return frame
    own = frame[frame["suffix"] == ""].copy()
    own["evaluated"] = OWN_TEST
    ids = {str(run.path): run.run_id for run in runs.runs}
    added: list[dict[str, Any]] = []
    records: list[tuple[dict[str, Any], dict[str, Any]]] = []
    damaged: list[Path] = []
    lacking = 0
    for base in own.to_dict("records"):
        found, bad = read_evaluations(Path(base["path"]), ids[base["path"]])
        damaged += bad
        for record in found:
            value = record["scores"].get(score)
            if value is None:
                lacking += 1
                continue
            report = record["report"]
            support = [int(sum(row)) for row in report["confusion_matrix"]]
            present = [(name, n) for name, n in zip(report["class_names"], support) if n]
            reference = (SplitReference(sum(n for _, n in present), tuple(n for _, n in present),
                                        tuple(name for name, _ in present)) if present else None)
            added.append({**base, "value": float(value), "evaluated": record["target"]["key"],
                          "reference": reference, "dominant": dominant_prediction({"final": {"model": report}})})
            records.append((record, base["dataset_options"]))
    if damaged:
        shown = ", ".join(str(p) for p in damaged[:3]) + (", ..." if len(damaged) > 3 else "")
        notes.append(f"warning: skipped {len(damaged)} damaged or foreign evaluation file(s): {shown}; "
                     f"`nlbench evaluate` writes them again.")
    if lacking:
        notes.append(f"note: {lacking} stored evaluation(s) lack {score}.")
    if not records:
        notes.append("note: no stored evaluations of these runs: `nlbench evaluate RUN --dataset NAME` adds a "
                     "column per dataset.")
    labels = _evaluation_columns(records)
    for row in added:
        row["evaluated"] = labels[row["evaluated"]]
    return pd.concat([own, pd.DataFrame.from_records(added, columns=own.columns)], ignore_index=True)


def _evaluation_columns(found: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, str]:
    """A column label per evaluation target (by its key), from (evaluation, the run's dataset options):
    the dataset, the split unless it is test, and the options that tell it apart from the training
    data of the same name or from the other targets of the same name (``synthfer (seed=5)``); the
    data folder, or the key, where that is not enough."""
    from collections import defaultdict

    targets: dict[str, dict[str, Any]] = {}
    shown: dict[str, set[str]] = defaultdict(set)
    for record, options in found:
        target = record["target"]
        targets[target["key"]] = target
        if target["dataset"] == record.get("trained_on"):  # another instance of the training data
            shown[target["key"]] |= {k for k, v in target["options"].items() if options.get(k) != v}
    bases = {key: t["dataset"] + ("" if t["split"] == "test" else f" {t['split']}") for key, t in targets.items()}
    for base in set(bases.values()):
        same = [key for key, b in bases.items() if b == base]
        varying = {k for key in same for k in targets[key]["options"]
                   if len({json.dumps(targets[other]["options"].get(k)) for other in same}) > 1}
        for key in same:
            shown[key] |= varying
    labels = {}
    for key, base in bases.items():
        options = targets[key]["options"]
        text = ", ".join(f"{k}={options.get(k)}" for k in sorted(shown[key]))
        labels[key] = base + (f" ({text})" if text else "")
    for text in set(labels.values()):
        same = [key for key, label in labels.items() if label == text]
        if len(same) < 2:
            continue
        folders = {key: Path(targets[key].get("root") or "").name for key in same}
        unique = len(set(folders.values())) == len(same) and all(folders.values())
        for key in same:
            labels[key] = f"{text} ({folders[key] if unique else key})"
    return labels


def _attach_references(table: ComparisonTable, frame: pd.DataFrame) -> None:
    """Each column's majority-class and chance scores, and the cells of one-class models."""
    from nlbench.report.references import SplitReference

    for column in table.columns:
        rows = frame[frame["column"] == column] if "column" in frame else frame.iloc[0:0]
        found = [r for r in rows["reference"] if r is not None]
        if not found:
            continue
        if rows["fold"].gt(0).any():  # k folds test every sample once: their union is the test set
            by_fold = {f: r for f, r in zip(rows["fold"], rows["reference"]) if r is not None}
            counts = tuple(int(sum(c)) for c in zip(*(r.counts for r in by_fold.values())))
            table.references[column] = SplitReference(sum(counts), counts, found[0].class_names)
        elif len({r.counts for r in found}) == 1:
            table.references[column] = found[0]
    for r in frame.itertuples():
        if r.dominant is not None:
            fold = f" fold {r.fold}" if r.fold else ""
            table.flags.setdefault((r.row, r.column), []).append(
                f"{r.variant} on {r.column}, noise {r.noise}, seed {r.seed}{fold}: {r.dominant.describe()}")


def _attach_paper(table: ComparisonTable, metric: str, score: str, paper: str = "cct") -> None:
    """The printed value of every cell that paper ``paper`` has (accuracy only): one paper per
    table, named in the caption, so no shown value is of uncertain origin."""
    from nlbench.report.published import load_paper

    published = load_paper(paper)
    if score != "accuracy":
        table.notes.append("note: the paper publishes accuracy only; --with-paper shows nothing for other scores.")
        return
    for row in table.rows:
        for column in table.columns:
            value = _paper_value(published, table.layout, row, column, table.frame)
            if value is not None:
                table.paper[(row, column)] = value
    if not table.paper:
        table.notes.append(f"note: paper {paper!r} prints none of this table's cells; --with-paper shows nothing.")
    shown = {column for _, column in table.paper}  # a caveat only where its dataset has a paper value
    caveats = "".join(f" {text}" for dataset, text in published.caveats.items() if dataset in shown)
    table.caption += (f" Paper: the value printed in {published.source} ({published.selection}), "
                      f"Δ = ours - paper.{caveats}")


def _paper_value(published: Any, layout: str, row: tuple[str, ...], column: str, frame: pd.DataFrame) -> float | None:
    method = row[-1]
    if layout == "table8":
        dataset, noise, model = row
        if model != "cct" or " " in noise or noise.startswith("real"):
            return None  # a variant, another noise mode or real noise: not what the paper ran
        networks, consistent = int(column[0]), column[1] == "+"
        return published.value("table8", "cct", dataset, float(noise) / 100, networks, consistent)
    if " [" in method or ":" in method:
        return None  # a variant: not what the paper ran
    if layout == "table1":
        noise = row[0]
        if noise.startswith("real"):
            return published.value("table2", method, column, "real")
        if " " in noise:
            return None  # another noise mode
        rate = float(noise) / 100
        return published.value("table3" if rate == 0 else "table1", method, column, rate)
    if layout == "table2":
        return published.value("table2", method, column, "real")
    return published.value("table3", method, column, 0.0)


# -- comparisons against a baseline ---------------------------------------------------------
@dataclass
class CompareTable:
    """Per cell: a method minus the baseline over the seeds both ran."""

    baseline: str
    rows: list[tuple[str, ...]]
    columns: list[str]
    cells: dict[tuple[tuple[str, ...], str], Any]
    caption: str


def compare(table: ComparisonTable, baseline: str) -> CompareTable:
    """Paired comparison of every method row with the ``baseline`` method's row of the same group."""
    from nlbench.report.statistics import paired_comparison

    if not table.rows:
        return CompareTable(baseline, [], [], {}, "")
    lookup = table._lookup
    rows = [r for r in table.rows if r[-1] != baseline]
    cells = {}
    for row in rows:
        base_row = (*row[:-1], baseline)
        for column in table.columns:
            mine, base = lookup.get((row, column)), lookup.get((base_row, column))
            if mine is None or base is None:
                continue
            seeds = sorted(set(mine.by_seed) & set(base.by_seed))
            if not seeds:
                continue
            cells[(row, column)] = paired_comparison([mine.by_seed[s] for s in seeds], [base.by_seed[s] for s in seeds])
    caption = (f"Difference to {baseline} (points), paired by seed (same noisy labels and initialisation): "
               f"mean [95% t-interval] p of the paired t-test; * = p < 0.05 (the interval excludes 0), n.s. = not; "
               f"fewer than 3 common seeds: no difference shown. "
               + ("Lower is better for ECE." if table.lower_is_better else ""))
    return CompareTable(baseline, rows, table.columns, cells, caption.strip())


def ranks(table: ComparisonTable) -> Any:
    """Average ranks of the methods over the cells (group x dataset) where every method ran."""
    from nlbench.report.statistics import rank_analysis

    scores: dict[str, dict[tuple, float]] = {}
    for cell in table.cells.itertuples():
        if ":" in cell.row[-1]:  # models shown beside the deployed one do not compete
            continue
        scores.setdefault(cell.row[-1], {})[(*cell.row[:-1], cell.column)] = cell.mean
    return rank_analysis(scores, higher_is_better=not table.lower_is_better)


def row_ranks(table: ComparisonTable) -> dict[tuple[str, ...], float]:
    """Each method row's average rank within its group (e.g. its noise level) over the columns
    where every method of the group ran: the table's rank column."""
    from scipy.stats import rankdata

    groups: dict[tuple[str, ...], dict[str, dict[tuple[str, ...], float]]] = {}
    for cell in table.cells.itertuples():
        if ":" not in cell.row[-1]:
            groups.setdefault(cell.row[:-1], {}).setdefault(cell.column, {})[cell.row] = cell.mean
    out: dict[tuple[str, ...], list[float]] = {}
    for columns in groups.values():
        rows = {row for cells in columns.values() for row in cells}
        for cells in columns.values():
            if set(cells) != rows or len(rows) < 2:
                continue  # ranks are compared over complete columns only
            ordered = sorted(cells)
            values = [cells[r] for r in ordered]
            ranked = rankdata([v if table.lower_is_better else -v for v in values])
            for row, rank in zip(ordered, ranked):
                out.setdefault(row, []).append(float(rank))
    return {row: sum(r) / len(r) for row, r in out.items()}


def cost_rows(table: ComparisonTable) -> list[dict[str, Any]]:
    """Per dataset and method row: runs, network-epochs trained, mean seconds and training images/s per run."""
    out = []
    frame = table.frame
    if frame.empty:
        return out
    def mean(costs: list[dict[str, Any]], key: str) -> float | None:
        values = [c.get(key) for c in costs if c.get(key) is not None]
        return sum(values) / len(values) if values else None

    for (dataset, variant), group in frame[frame["suffix"] == ""].groupby(["dataset", "variant"]):
        costs = list(group["cost"])
        # Measured work where the method reports it (DivideMix); results written before pass_epochs
        # existed trained one pass per network-epoch.
        passes = [c.get("work_epochs", c.get("pass_epochs", c.get("network_epochs"))) for c in costs]
        out.append({"dataset": dataset, "method": variant, "runs": len(group),
                    "network_epochs": mean(costs, "network_epochs"),
                    "pass_epochs": mean([{"p": p} for p in passes], "p"),
                    "seconds": mean(costs, "seconds"), "images_per_s": mean(costs, "train_images_per_s")})
    return sorted(out, key=lambda r: (_dataset_order(r["dataset"]), _method_order(r["method"])))
