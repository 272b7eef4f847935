"""The one reader of finished runs, and the one definition of a cell: which runs are comparable.

Every report (``table``, ``plot``, ``report``, ``export``) reads the store through
:func:`read_runs`: the latest copy of each run id (a run stored twice counts once), results
checked by :mod:`nlbench.result` (damaged files are listed, never a crash), the same filters,
and each run's history read once, on first use.

A *cell* is what a table cell and a figure's line average over: runs of one test set
(:func:`test_set_labels`: a dataset and its test split), one noise (:func:`noise_label`) and one
*variant* (:func:`variant_labels`): the method plus every setting in which it differs from the
other runs shown: its hyperparameters, the training settings, the dataset's version, options and
files, and the initialisation. Only the seed (and the fold of a k-fold protocol) varies inside a
cell. :class:`Filters` narrows the runs every report reads, ``--where`` included.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlbench.catalogue import method_order_key
from nlbench.report.references import split_key
from nlbench.result import Result
from nlbench.store import RunDir, iter_results


@dataclass
class FinishedRun:
    """One finished run: its folder, its checked result and (read on first use) its history."""

    path: Path
    result: Result
    _history: list[dict[str, Any]] | None = field(default=None, repr=False)
    #: Lines of metrics.jsonl skipped as damaged (known once the history is read).
    skipped_lines: int = 0

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records of metrics.jsonl (damaged lines skipped)."""
        if self._history is None:
            self._history, self.skipped_lines = RunDir(self.path).read_metrics()
        return self._history

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def method(self) -> str:
        return self.result.method

    @property
    def dataset(self) -> str:
        return self.result.dataset

    @property
    def seed(self) -> int:
        return self.result.seed

    @property
    def noise(self) -> str:
        """The noise as tables and figures label it (:func:`noise_label`)."""
        return noise_label(self.result["noise"])


@dataclass
class Filters:
    """Which runs a report uses (an empty list: all)."""

    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    #: Run id prefixes.
    run_ids: list[str] = field(default_factory=list)
    #: ``--where KEY=VALUE`` conditions on the resolved settings (:func:`setting_of`).
    where: list[tuple[str, Any]] = field(default_factory=list)

    def keep(self, result: Result) -> bool:
        """Whether a result passes every filter."""
        return self.matches(result.method, result.dataset, result["noise"]["rate"], result.seed, result.run_id,
                            settings=result)

    def matches(self, method: str, dataset: str, rate: Any, seed: int, run_id: str,
                settings: Any = None) -> bool:
        """Whether a run with these fields passes every filter (a run without a result: from its
        spec). ``settings``: the result (or :func:`settings_of_spec` of a spec) the ``where``
        conditions read."""
        if self.where and not all(_equal(setting_of(settings or {}, key), value) for key, value in self.where):
            return False
        return ((not self.methods or method in self.methods)
                and (not self.datasets or dataset in self.datasets)
                and (not self.noise or (isinstance(rate, (int, float))
                                        and any(abs(float(rate) - r) < 1e-9 for r in self.noise)))
                and (not self.seeds or seed in self.seeds)
                and (not self.run_ids or any(run_id.startswith(p) for p in self.run_ids)))


@dataclass
class RunSet:
    """What :func:`read_runs` found: the runs, the damaged result files, and copies left out."""

    runs: list[FinishedRun]
    damaged: list[Path] = field(default_factory=list)
    #: Older copies of a run id stored more than once (only the latest counts).
    duplicates: int = 0

    def warnings(self) -> list[str]:
        """One line per problem a reader should show (damaged files, damaged history lines)."""
        out = []
        if self.damaged:
            shown = ", ".join(str(p) for p in self.damaged[:3]) + (", ..." if len(self.damaged) > 3 else "")
            out.append(f"warning: skipped {len(self.damaged)} damaged result file(s): {shown}; "
                       f"`nlbench status --failed` lists the runs, and training them again with --force repairs them.")
        torn = [r for r in self.runs if r._history is not None and r.skipped_lines]
        for run in torn[:3]:
            out.append(f"warning: skipped {run.skipped_lines} damaged line(s) of {run.path / 'metrics.jsonl'}.")
        return out


#: The sections of a result a ``--where`` key names, and the spellings that reach them.
WHERE_SECTIONS = {"train": "train", "hparams": "hparams", "methods": "hparams", "dataset_options": "dataset_options",
                  "datasets": "dataset_options", "noise": "noise"}
_MISSING = object()


def setting_of(record: Any, key: str) -> Any:
    """The value a result records at a ``--where`` key: ``train.train_size``, ``hparams.q`` (or
    ``methods.gce.q``: the method must be gce), ``dataset_options.fold`` (or
    ``datasets.X.options.fold``), ``noise.mode``, or a top-level key (``method``, ``seed``)."""
    parts = key.split(".")
    section = WHERE_SECTIONS.get(parts[0])
    if section is None:
        value = record.get(key, _MISSING) if len(parts) == 1 else _MISSING
        return value
    rest = parts[1:]
    if parts[0] == "methods":  # methods.<name>.<key>
        if len(rest) != 2 or record.get("method") != rest[0]:
            return _MISSING
        rest = rest[1:]
    elif parts[0] == "datasets":  # datasets.<name>.options.<key>
        if len(rest) != 3 or rest[1] != "options" or record.get("dataset") != rest[0]:
            return _MISSING
        rest = rest[2:]
    if len(rest) != 1:
        return _MISSING
    table = record.get(section) or {}
    if not isinstance(table, dict):
        return _MISSING
    if section == "train" and rest[0] not in table:  # added later: left out of the identity at its default
        return _ADDED_TRAIN_DEFAULTS.get(rest[0], _MISSING)
    return table.get(rest[0], _MISSING)


def settings_of_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec.json in the shape of a result, for ``--where`` on runs without a result."""
    data = spec.get("data") or {}
    return {"method": spec.get("method"), "dataset": data.get("name"), "seed": spec.get("seed"),
            "train": spec.get("train") or {}, "hparams": spec.get("hparams") or {},
            "dataset_options": data.get("options") or {}, "noise": spec.get("noise") or {}}


def _equal(found: Any, wanted: Any) -> bool:
    if found is _MISSING:
        return False
    if isinstance(found, (int, float)) and isinstance(wanted, (int, float)) and not isinstance(found, bool) \
            and not isinstance(wanted, bool):
        return abs(float(found) - float(wanted)) <= 1e-9 * max(1.0, abs(float(wanted)))
    if isinstance(found, str) and not isinstance(wanted, str):
        return found == str(wanted)
    return json.dumps(found, sort_keys=True) == json.dumps(wanted, sort_keys=True)


def unknown_where_keys(filters: Filters, records: Iterable[Any]) -> list[str]:
    """The ``--where`` keys no record has (a typo, or a setting no run records): an error to report."""
    keys = {key for key, _ in filters.where}
    for record in records:
        keys = {key for key in keys if setting_of(record, key) is _MISSING}
        if not keys:
            break
    return sorted(keys)


def read_runs(runs_dir: Path, filters: Filters | None = None, run_ids: Iterable[str] | None = None) -> RunSet:
    """Every finished run under ``runs_dir`` passing ``filters`` (and in ``run_ids``), latest copy
    of each run id, in table order (dataset, noise, method, seed)."""
    filters = filters or Filters()
    wanted = set(run_ids) if run_ids is not None else None
    damaged: list[Path] = []
    latest: dict[str, tuple[Path, Result]] = {}
    copies = 0
    seen: list[Result] = []
    for path, result in iter_results(Path(runs_dir), damaged):
        if filters.where and len(seen) < 10_000:
            seen.append(result)
        if (wanted is not None and result.run_id not in wanted) or not filters.keep(result):
            continue
        if result.run_id in latest:
            copies += 1
            if result.finished < latest[result.run_id][1].finished:
                continue
        latest[result.run_id] = (path, result)
    if filters.where and not latest:
        unknown = unknown_where_keys(filters, seen)
        if unknown:
            from nlbench.errors import UsageError

            raise UsageError(f"--where {unknown[0]}: no stored run records that setting; keys look like "
                             f"train.train_size, hparams.q (or methods.gce.q), dataset_options.fold (or "
                             f"datasets.NAME.options.fold), noise.mode, seed.")
    runs = [FinishedRun(path, result) for path, result in latest.values()]
    runs.sort(key=lambda r: (r.dataset, r.noise, method_order_key(r.method), r.seed, r.run_id))
    return RunSet(runs, damaged, copies)


def noise_label(noise: dict[str, Any]) -> str:
    """The noise of a run as a row or panel label: the injected rate (and mode), real, or a noise file."""
    if noise.get("source") == "file":  # runs on one noise file are compared with each other only
        from nlbench.data.published_noise import table_label

        sha = (noise.get("file") or {}).get("sha256") or "?"
        name = table_label(sha) or f"file {sha[:8]}"  # a list a paper published goes by its name
        return f"{name} ({100 * float(noise.get('realised_rate') or 0):.1f}%)"
    if noise.get("source") == "dataset" and noise.get("rule"):
        return f"real ({noise['rule']})"  # seeds of one rule belong in one cell
    if noise.get("source") == "dataset":
        realised = noise.get("realised_rate")
        return "real" if realised is None else f"real ({100 * realised:.1f}%)"
    label = f"{100 * noise['rate']:g}"
    return label if noise.get("mode", "flip") == "flip" else f"{label} ({noise['mode']})"


# -- variants: the settings that tell runs of one method apart --------------------------------
@dataclass
class ConfiguredSettings:
    """The configured settings (benchmark.toml over the defaults) per method and dataset: the
    values a variant label leaves out, so only deliberate changes show."""

    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)


def configured_settings(config: Any, registry: Any) -> ConfiguredSettings:
    """The settings a run gets without --set, for every registered method and every dataset (plugins
    and configured instances, keyed by the name runs store)."""
    import dataclasses

    from nlbench.errors import NlbenchError
    from nlbench.options import build_options
    from nlbench.spec.resolve import resolve_train_settings

    usual = ConfiguredSettings()
    for name in registry.methods:
        try:
            cls = registry.method(name)
            usual.hparams[name] = dataclasses.asdict(cls.canonical(build_options(cls.HParams, config.method_hparams(name),
                                                                                 f"methods.{name}")))
        except NlbenchError:  # a broken table or plugin is reported by the commands that use it
            continue
    for name in config.dataset_names(registry):  # the plugins and the configured instances, by name
        try:
            cls = config.dataset_class(name, registry)
            usual.train[name] = dataclasses.asdict(resolve_train_settings(config, cls, name, {}))
            options = build_options(cls.Options, config.dataset_options(name), f"datasets.{name}.options")
            usual.data[name] = {"version": str(cls.version), **dataclasses.asdict(options)}
        except NlbenchError:
            continue
    return usual


def _data_of(result: Result) -> dict[str, Any]:
    """The dataset's identity a run was evaluated on: version, options and (when recorded) files."""
    # The fold of a k-fold protocol is not a variant: tables average over the folds of a seed.
    data = {"version": result.get("dataset_version", "1"),
            **{k: v for k, v in result.get("dataset_options", {}).items() if k != "fold"}}
    if result.get("data_fingerprint"):
        data["files"] = result["data_fingerprint"][:8]
    return data


def variant_labels(runs: list[FinishedRun], axes: tuple[str, ...] = ()) -> dict[Path, str]:
    """The label of every run's variant (by run folder): its method plus the settings where it
    differs from the other runs shown.

    Hyperparameters are compared within a method, training settings and the dataset's identity
    (version, options, files) within a dataset and test split. A setting that differs labels
    *every* run with its value (``gce [q=0.5]`` beside ``gce [q=0.7]``): an unlabelled row beside
    a labelled one would read as "the method" against "a tweak", whatever the configured value
    is. A run that records itself as a named variant (``deployment.variant``: LA-Net without
    landmarks) is labelled with those settings always. ``axes``: hyperparameters a layout shows as
    columns.
    """

    def differing(values: Callable[[FinishedRun], dict[str, Any]], group: Callable[[FinishedRun], str]
                  ) -> dict[Path, list[str]]:
        out: dict[Path, list[str]] = {run.path: [] for run in runs}
        groups: dict[str, list[FinishedRun]] = defaultdict(list)
        for run in runs:
            groups[group(run)].append(run)
        varying: set[str] = set()
        for members in groups.values():
            keys = {k for run in members for k in values(run)} - set(axes)
            varying |= {key for key in keys  # the same in every run of a group: not a difference
                        if len({json.dumps(values(run).get(key), sort_keys=True) for run in members}) > 1}
        # A setting that varies in one group labels the runs of every group that record it, so
        # the rows of one method line up across the datasets (columns) of a table.
        for run in runs:
            for key in sorted(varying & set(values(run))):  # a run stored before a setting existed: unknown
                out[run.path].append(f"{key}={values(run)[key]}")
        return out

    hp = differing(lambda r: r.result.get("hparams", {}), lambda r: r.method)
    train = differing(lambda r: {**_ADDED_TRAIN_DEFAULTS, **r.result.get("train", {})}, lambda r: r.dataset)
    # Real-noise runs are compared with real-noise runs: the options that pick a dataset's real
    # noisy labels (FERPlus real_noise) are what makes them real-noise runs, not a variant.
    # Runs on other test splits are told apart by their column (tables.test_set_labels), so the
    # dataset settings are compared within one test split.
    data = differing(lambda r: _data_of(r.result),
                     lambda r: f"{r.dataset}|{r.result['noise'].get('source', 'injected')}|{split_key(r.result)}")
    initialisations = {_pretrained(run) for run in runs}
    labels = {}
    for run in runs:
        hparams = run.result.get("hparams", {})
        named = [f"{key}={hparams[key]}" for key in (run.result.get("deployment") or {}).get("variant", [])
                 if key in hparams]
        extra = sorted(set(hp[run.path]) | set(named)) + sorted(train[run.path]) + sorted(data[run.path])
        if len(initialisations) > 1 and _pretrained(run):  # one shared initialisation is in the caption
            extra.append(f"pretrained={_pretrained(run)[:8]}")
        labels[run.path] = run.method + (f" [{', '.join(extra)}]" if extra else "")
    return labels


def _added_defaults() -> dict[str, Any]:
    """Training settings added after runs were stored: left out of a run's identity at their
    default, so a result without one ran with it (and is labelled with it where it differs)."""
    import dataclasses

    from nlbench.options import is_added
    from nlbench.settings import TrainSettings

    return {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
            for f in dataclasses.fields(TrainSettings) if is_added(f)}


_ADDED_TRAIN_DEFAULTS = _added_defaults()


def _pretrained(run: FinishedRun) -> str:
    return (run.result.get("pretrained") or {}).get("sha256") or ""


def test_set_labels(runs: list[FinishedRun]) -> dict[Path, str]:
    """The test set of every run (by run folder) as a column label: its dataset, and what sets its
    test split apart where the runs shown of that dataset were evaluated on more than one (the
    options that differ, else the class count and test size, else the split's digest)."""
    from nlbench.report.references import split_reference

    labels = {run.path: run.dataset for run in runs}
    by_dataset: dict[str, list[FinishedRun]] = defaultdict(list)
    for run in runs:
        by_dataset[run.dataset].append(run)
    for dataset, members in by_dataset.items():
        splits: dict[str, FinishedRun] = {}  # split key -> its first run
        for run in members:
            splits.setdefault(split_key(run.result), run)
        if len(splits) < 2:
            continue
        options = {key: {k: v for k, v in run.result.get("dataset_options", {}).items() if k != "fold"}
                   for key, run in splits.items()}
        keys = sorted({k for o in options.values() for k in o})
        varying = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in options.values()}) > 1]
        names: dict[str, str] = {}
        for key, run in splits.items():
            reference = split_reference(run.result)
            parts = [f"{k}={options[key].get(k)}" for k in varying]
            if not parts and reference is not None:
                parts = [f"{len(reference.counts)} classes, test {reference.size}"]
            names[key] = ", ".join(parts) or f"test split {key.split(':')[-1][:8]}"
        if len(set(names.values())) < len(names):  # the same text for two splits: add their digests
            names = {key: f"{text}, {key.split(':')[-1][:8]}" for key, text in names.items()}
        for run in members:
            labels[run.path] = f"{dataset} [{names[split_key(run.result)]}]"
    return labels


def cells(runs: list[FinishedRun], labels: dict[Path, str] | None = None) -> dict[tuple[str, str, str], list[FinishedRun]]:
    """The runs of each cell, keyed (test set label, noise label, variant label); only the seed
    (and the fold of a k-fold protocol) varies inside."""
    labels = labels if labels is not None else variant_labels(runs)
    sets = test_set_labels(runs)
    out: dict[tuple[str, str, str], list[FinishedRun]] = defaultdict(list)
    for run in runs:
        out[(sets[run.path], run.noise, labels[run.path])].append(run)
    return dict(out)


def seeds_text(runs: list[FinishedRun]) -> str:
    """The seeds of a cell as a title says them: "seed 1" or "3 seeds (1, 2, 3)"."""
    seeds = sorted({run.seed for run in runs})
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))})"
