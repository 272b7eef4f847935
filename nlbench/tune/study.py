"""Equal-budget tuning: one Optuna study per method, whose trials are ordinary nlbench runs.

Every method gets the same budget (trials, or network-epochs from each run's ``cost``), the same
tuning seeds and the same fixed settings; a trial is scored on the noisy validation split only
(the deployable model's accuracy on ``train.val_fraction`` of the training set, labels as noisy
as the rest, at the last epoch), never on the test set. Studies live in one Optuna journal file
in the store (``<runs_dir>/tune/journal.log``): no database server, and a stopped ``nlbench
tune`` continues where it stopped (a trial it had started is trained again from its run's
checkpoint and then scored). The chosen configuration of each method is then trained on the
evaluation seeds beside the default configuration, so both are compared on the same seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlbench.errors import UsageError
from nlbench.tune.pruning import PRUNERS, TrialPruner, make_pruner
from nlbench.tune.space import Dimension, search_space, set_items, suggest
from nlbench.tuned import MethodOutcome, describe_point

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.registry import Registry
    from nlbench.spec.config import Config
    from nlbench.spec.resolve import RunRequest
    from nlbench.spec.runspec import RunSpec

#: The journal of every study of a store, under its runs folder.
JOURNAL = Path("tune") / "journal.log"
#: Budget units: trials per method, or network-epochs (``cost.network_epochs`` of the trials' runs).
UNITS = ("trials", "network-epochs")
SAMPLERS = ("tpe", "random")


def require_optuna() -> Any:
    """Optuna, or one clear message saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise UsageError("nlbench tune needs Optuna: pip install 'nlbench[tune]' (or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # nlbench reports the trials itself
    return optuna


@dataclass
class TuneRequest:
    """What ``nlbench tune`` was asked: the methods, the fixed settings, the budget and the seeds."""

    methods: list[str]
    #: The settings every run shares (dataset, noise, epochs, --set ...); method and seed are set per run.
    base: RunRequest
    budget: float
    unit: str = "trials"
    #: Seeds of the tuning runs (a trial's score is the mean over them); never the evaluation seeds.
    tune_seeds: list[int] = field(default_factory=lambda: [101])
    #: Seeds the chosen and the default configurations are trained and compared on.
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    sampler: str = "tpe"
    #: Stops poor trials early from their per-epoch noisy-validation accuracy (:mod:`nlbench.tune.pruning`).
    pruner: str = "median"
    #: Seeds the sampler (with the method's name, so every method's study is reproducible alone).
    sampler_seed: int = 0

    def check(self) -> None:
        """One clear error per bad value, before any study or run exists."""
        if self.unit not in UNITS:
            raise UsageError(f"--budget-unit must be one of {', '.join(UNITS)}, got {self.unit!r}.")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}.")
        if self.pruner not in PRUNERS:
            raise UsageError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}.")
        if not (self.budget > 0 and math.isfinite(self.budget)) or (self.unit == "trials" and self.budget != int(self.budget)):
            raise UsageError(f"--budget must be a positive {'whole number' if self.unit == 'trials' else 'number'}, "
                             f"got {self.budget:g}.")
        if not self.methods:
            raise UsageError("--methods names no method to tune.")
        overlap = sorted(set(self.tune_seeds) & set(self.seeds))
        if overlap:
            raise UsageError(f"seed(s) {', '.join(map(str, overlap))} are both tuning and evaluation seeds: choosing "
                             "on the seeds a configuration is then evaluated on flatters it. Use other --tune-seeds.")


def score_of(result: dict[str, Any]) -> float:
    """A trial run's score: its deployable model's noisy-validation accuracy (%) at the last epoch."""
    curve = (result.get("metrics", {}).get("model") or {}).get("val_curve") or []
    if not curve:
        raise UsageError("the trial's run has no validation accuracy: tuning chooses on the noisy validation split, "
                         "so train.val_fraction must be above 0.")
    return float(curve[-1])


def cost_of(result: dict[str, Any]) -> float:
    """A run's compute in network-epochs (one network trained for one epoch over the training set)."""
    return float((result.get("cost") or {}).get("network_epochs") or 0.0)


def default_point(spec: RunSpec, space: dict[str, Dimension]) -> dict[str, Any] | None:
    """The values a default run of ``spec`` has for each tuned key, or None if one is outside the space."""
    point = {}
    for key, dim in space.items():
        table, name = key.split(".", 1)[0], key.rsplit(".", 1)[-1]
        value = getattr(spec.train, name) if table == "train" else spec.hparams[name]
        if not dim.contains(value):
            return None
        point[key] = value
    return point


def make_sampler(request: TuneRequest, method: str, earlier: int) -> Any:
    """The seeded sampler of a method's study that already holds ``earlier`` trials."""
    import optuna

    key = f"{request.sampler_seed}:{method}" + (f":{earlier}" if earlier else "")
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    if request.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # parallel trials spread out


class MethodStudy:
    """The Optuna study of one method: its space, its budget, and its trials' runs."""

    def __init__(self, method: str, request: TuneRequest, config: Config, registry: Registry, store: Path) -> None:
        optuna = require_optuna()
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.method, self.request = method, request
        self.space: dict[str, Dimension] = search_space(registry.method(method), config)
        self.name = study_name(method, request, self.space)
        default_spec = trial_specs(method, {}, request.tune_seeds[:1], request, config, registry)[0]
        self.epochs = default_spec.train.epochs
        #: The default configuration as a point of the space (None if the space leaves it out).
        self.default = default_point(default_spec, self.space)
        path = self.journal = store / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        self.study = optuna.create_study(study_name=self.name, storage=JournalStorage(JournalFileBackend(str(path))),
                                         sampler=make_sampler(request, method, 0),
                                         pruner=make_pruner(request.pruner, self.epochs),
                                         direction="maximize", load_if_exists=True)
        # A continued study draws from a stream of its own: the sampler's state is not in the
        # journal, and the same seed again would propose the points of the first trials again.
        earlier = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = make_sampler(request, method, earlier)
        if not earlier and self.default is not None:
            # The first trial is the default configuration, so the choice is never worse than the
            # default on the noisy validation split: tuning can keep it.
            self.study.enqueue_trial(self.default)
        self.study.set_user_attr("method", method)

    # -- the budget ----------------------------------------------------------------------------
    def finished(self) -> list[Any]:
        """The trials scored (or failed): what the budget has paid for."""
        from optuna.trial import TrialState

        return [t for t in self.study.get_trials(deepcopy=False) if t.state != TrialState.RUNNING]

    def started(self) -> list[Any]:
        """Trials asked but never scored: a stopped ``tune`` left them; their runs resume."""
        from optuna.trial import TrialState

        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    def spent(self) -> float:
        """Budget used by the finished trials (trials, or their runs' network-epochs)."""
        done = self.finished()
        return float(len(done)) if self.request.unit == "trials" else sum(t.user_attrs.get("cost", 0.0) for t in done)

    def room(self, in_flight: int) -> bool:
        """Whether one more trial fits the budget beside ``in_flight`` unscored ones. In network-
        epochs a trial is assumed to cost what the finished ones did on average (the first one
        runs alone), so the budget is never overrun by more than one trial's estimate error."""
        if self.request.unit == "trials":
            return len(self.finished()) + in_flight < self.request.budget
        done = [t.user_attrs.get("cost", 0.0) for t in self.finished()]
        if not done:
            return in_flight == 0
        estimate = sum(done) / len(done)
        return self.spent() + (in_flight + 1) * estimate <= self.request.budget

    # -- trials ---------------------------------------------------------------------------------
    def ask(self) -> tuple[Any, dict[str, Any]]:
        """A new trial and the values it sets (``--set`` key -> value)."""
        trial = self.study.ask()
        return trial, suggest(trial, self.space)

    def resume(self) -> list[tuple[Any, dict[str, Any]]]:
        """The trials a stopped ``tune`` had started, with their values, to train (resume) and score."""
        import optuna

        # Optuna has no public handle from a stored trial to a live one; Trial(study, id) is what
        # Study.ask itself returns.
        return [(optuna.trial.Trial(self.study, frozen._trial_id), dict(frozen.params)) for frozen in self.started()]

    def pruners(self, trial: Any, specs: list[RunSpec]) -> dict[str, list[Any]]:
        """The observers that prune ``trial``'s run (none with several tuning seeds: their runs would
        report the same epochs to one trial)."""
        if self.request.pruner == "none" or len(specs) != 1:
            return {}
        return {specs[0].run_id: [TrialPruner(str(self.journal), self.name, trial._trial_id, self.request.pruner,
                                              self.epochs)]}

    def full_cost(self) -> float | None:
        """What a whole trial costs, from the trials that ran to the end (None before any)."""
        costs = [t.user_attrs["cost"] for t in self.finished() if t.value is not None and "pruned_at" not in t.user_attrs
                 and "cost" in t.user_attrs]
        return sum(costs) / len(costs) if costs else None

    def tell(self, trial: Any, results: list[dict[str, Any]] | None) -> float | None:
        """Score ``trial`` from its runs' results; None: a run failed (the trial counts, unscored),
        or the pruner stopped it (a result ``{"stopped": (epoch, epochs)}``: it costs the epochs it
        trained)."""
        from optuna.trial import TrialState

        if results is None:
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        stopped = [result["stopped"] for result in results if "stopped" in result]
        if stopped:
            epoch, epochs = stopped[0]
            full = self.full_cost()
            trial.set_user_attr("pruned_at", epoch)
            trial.set_user_attr("cost", (full if full is not None else epochs) * epoch / epochs)
            trial.set_user_attr("saved", (full if full is not None else epochs) * (epochs - epoch) / epochs)
            self.study.tell(trial, state=TrialState.PRUNED)
            return None
        trial.set_user_attr("cost", sum(cost_of(result) for result in results))
        trial.set_user_attr("run_ids", [result["run_id"] for result in results])
        score = sum(score_of(result) for result in results) / len(results)
        self.study.tell(trial, score)
        return score

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The chosen values and their validation score, or None before any trial was scored."""
        from optuna.trial import TrialState

        scored = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not scored:
            return None
        top = max(scored, key=lambda t: (t.value, -t.number))  # ties: the earliest trial
        return dict(top.params), float(top.value)


def study_name(method: str, request: TuneRequest, space: dict[str, Dimension]) -> str:
    """A study's name: the method and a digest of everything its trials share (dataset, noise,
    epochs, settings, tuning seeds, sampler, space, budget unit), so that the same command
    continues its study and a changed one starts another."""
    base = dataclasses.asdict(request.base)
    base.pop("method", None)
    base.pop("seed", None)
    base.update(device=None, cache_dir=None)  # where a trial trains and caches changes no result: the same study
    identity = {"base": base, "tune_seeds": request.tune_seeds, "sampler": request.sampler, "pruner": request.pruner,
                "sampler_seed": request.sampler_seed, "unit": request.unit,
                "space": {key: dataclasses.asdict(dim) for key, dim in space.items()}}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{method}-{digest}"


def trial_specs(method: str, values: dict[str, Any], seeds: list[int], request: TuneRequest, config: Config,
                registry: Registry) -> list[RunSpec]:
    """The runs of one configuration of ``method`` (``values``: ``--set`` key -> value), one per seed."""
    from nlbench.spec.resolve import resolve_spec

    return [resolve_spec(dataclasses.replace(request.base, method=method, seed=seed,
                                             sets=[*request.base.sets, *set_items(values)]), config, registry)
            for seed in seeds]


def run_tuning(request: TuneRequest, config: Config, registry: Registry, store: Path, run_batch: Any,
               say: Any, per_round: int = 1) -> list[MethodOutcome]:
    """Tune every method of ``request`` to its budget, then train the chosen and the default
    configurations on the evaluation seeds.

    ``run_batch(specs, observers)`` trains run specs (an executor; ``observers``: run id -> the
    pruners of its trial) and returns run id -> result dict (``{"stopped": (epoch, epochs)}`` for a
    pruned run), or nothing for a run that did not finish; ``say(text)`` reports progress. Each round asks every study for
    up to ``per_round`` trials that fit its budget (plus the trials a stopped tune had started)
    and trains them all at once, so that workers are shared by the methods."""
    studies = [MethodStudy(method, request, config, registry, store) for method in request.methods]
    while True:
        batch: list[tuple[MethodStudy, Any, dict[str, Any], list[RunSpec]]] = []
        for study in studies:
            planned = study.resume()
            while len(planned) < per_round and study.room(len(planned)):
                planned.append(study.ask())
            for trial, values in planned:
                try:
                    specs = trial_specs(study.method, values, request.tune_seeds, request, config, registry)
                except UsageError as err:  # the method refuses this combination (its validate): a failed trial
                    study.tell(trial, None)
                    say(f"{study.method} trial {trial.number}: refused by the method ({err}); counted, not scored")
                    continue
                batch.append((study, trial, values, specs))
        if not batch:
            break
        observers = {run_id: pruners for study, trial, _, specs in batch
                     for run_id, pruners in study.pruners(trial, specs).items()}
        results = run_batch([spec for *_, specs in batch for spec in specs], observers)
        for study, trial, values, specs in batch:
            got = [results.get(spec.run_id) for spec in specs]
            score = study.tell(trial, None if any(result is None for result in got) else got)
            budget = f"{study.spent():g}/{request.budget:g} {request.unit}"
            shown = describe_point(values)
            pruned = [result["stopped"] for result in got if result and "stopped" in result]
            state = (f"val {score:.2f}" if score is not None
                     else f"pruned after epoch {pruned[0][0]}" if pruned else "failed")
            say(f"{study.method} trial {trial.number}: {state} ({budget}) {shown}")
    outcomes = []
    evaluation: list[tuple[MethodOutcome, str, list[RunSpec]]] = []
    for study in studies:
        best = study.best()
        finished = study.finished()
        pruned = [t for t in finished if "pruned_at" in t.user_attrs]
        outcome = MethodOutcome(study.method, study.name, len(finished),
                                sum(t.value is None and "pruned_at" not in t.user_attrs for t in finished),
                                study.spent(), len(pruned), sum(t.user_attrs.get("saved", 0.0) for t in pruned),
                                best[0] if best else None, best[1] if best else None,
                                chosen_is_default=best is not None and best[0] == study.default)
        outcomes.append(outcome)
        evaluation.append((outcome, "default", trial_specs(study.method, {}, request.seeds, request, config, registry)))
        if best is not None:
            evaluation.append((outcome, "tuned", trial_specs(study.method, best[0], request.seeds, request, config,
                                                             registry)))
    say(f"training the chosen and the default configurations on seeds {', '.join(map(str, request.seeds))}")
    results = run_batch([spec for *_, specs in evaluation for spec in specs], {})
    for outcome, which, specs in evaluation:
        accuracies = {spec.seed: results[spec.run_id]["metrics"]["model"]["last"]
                      for spec in specs if results.get(spec.run_id) is not None}
        setattr(outcome, which, accuracies)
    return outcomes

