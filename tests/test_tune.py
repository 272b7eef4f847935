"""nlbench tune: equal budgets, trials chosen on noisy validation only, studies that continue."""

from __future__ import annotations

import math
import re

import pytest

from tests.conftest import TINY

optuna = pytest.importorskip("optuna")

from nlbench.errors import UsageError  # noqa: E402
from nlbench.plugins import get_registry  # noqa: E402
from nlbench.spec.config import load_config  # noqa: E402
from nlbench.spec.resolve import RunRequest  # noqa: E402
from nlbench.tune.study import MethodStudy, TuneRequest, run_tuning  # noqa: E402

SETS = [item for item in TINY if item != "--set"]


def _request(**changes) -> TuneRequest:
    values = {"methods": ["standard"], "base": RunRequest(epochs=1, sets=list(SETS)), "budget": 6,
              "seeds": [1, 2, 3], "tune_seeds": [101], "sampler": "random"}
    values.update(changes)
    return TuneRequest(**values)


class FakeTraining:
    """Stands in for the executor: a run's validation accuracy rises with the backbone lr's
    distance from 1e-3 while its test accuracy falls, so choosing on the test set would pick
    the opposite trial. Records which runs it was asked for."""

    def __init__(self, cost: float = 1.0) -> None:
        self.asked: list = []
        self.cost = cost

    def __call__(self, specs, observers=None) -> dict:
        self.asked.append(specs)
        out = {}
        for spec in specs:
            distance = abs(math.log10(spec.train.backbone_lr) + 3)
            out[spec.run_id] = {"run_id": spec.run_id, "cost": {"network_epochs": self.cost},
                                "metrics": {"model": {"val_curve": [10.0, 50 + 10 * distance],
                                                      "last": 60 - 10 * distance + spec.seed}}}
        return out


def _tune(tmp_path, request, training=None, per_round=1):
    config, registry = load_config(None), get_registry()
    training = training or FakeTraining()
    outcomes = run_tuning(request, config, registry, tmp_path, training, say=lambda text: None, per_round=per_round)
    return outcomes, training


def test_the_chosen_trial_is_the_best_on_validation_never_the_best_on_test(tmp_path):
    (outcome,), training = _tune(tmp_path, _request())
    study = MethodStudy("standard", _request(), load_config(None), get_registry(), tmp_path).study
    trials = [t for t in study.trials if t.value is not None]
    assert len(trials) == 6 and outcome.trials == 6
    by_val = max(trials, key=lambda t: t.value)
    by_test = min(trials, key=lambda t: abs(math.log10(t.params["train.backbone_lr"]) + 3))  # best test, worst val
    assert outcome.chosen == by_val.params and outcome.val == pytest.approx(by_val.value)
    assert outcome.chosen != by_test.params
    # Trials train on the tuning seed only; the evaluation seeds see the default and the chosen configuration.
    trial_seeds = {spec.seed for batch in training.asked[:-1] for spec in batch}
    assert trial_seeds == {101}
    final = training.asked[-1]
    assert sorted(spec.seed for spec in final) == [1, 1, 2, 2, 3, 3]
    assert set(outcome.default) == set(outcome.tuned) == {1, 2, 3}


def test_a_rerun_continues_the_study_and_never_exceeds_the_budget(tmp_path):
    _tune(tmp_path, _request(budget=3))
    (again,), training = _tune(tmp_path, _request(budget=3))
    assert again.trials == 3 and len(training.asked) == 1  # only the evaluation runs
    (more,), training = _tune(tmp_path, _request(budget=5), per_round=2)
    assert more.trials == 5  # the same study: its name leaves the budget out, so a larger one continues it
    assert [len(batch) for batch in training.asked[:-1]] == [2]
    moved = RunRequest(epochs=1, sets=list(SETS), device="cpu", cache_dir=str(tmp_path / "elsewhere"))
    (same,), training = _tune(tmp_path, _request(budget=5, base=moved))
    assert same.study == more.study and same.trials == 5  # device and cache folder change no result


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_continued_study_proposes_new_points_not_its_first_ones_again(tmp_path, sampler):
    _tune(tmp_path, _request(budget=2, sampler=sampler))
    (outcome,), _ = _tune(tmp_path, _request(budget=4, sampler=sampler))
    study = optuna.load_study(study_name=outcome.study, storage=_storage(tmp_path))
    points = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(points) == 4 and len(set(points)) == 4, points


class DefaultIsBest(FakeTraining):
    """Validation accuracy falls with the backbone lr's distance from its default 1e-3."""

    def __call__(self, specs, observers=None) -> dict:
        out = super().__call__(specs, observers)
        for spec in specs:
            curve = out[spec.run_id]["metrics"]["model"]["val_curve"]
            curve[-1] = 90 - curve[-1]
        return out


def test_a_new_study_begins_with_the_default_and_keeps_it_when_nothing_beats_it_on_validation(tmp_path):
    (outcome,), training = _tune(tmp_path, _request(budget=4), DefaultIsBest())
    first = training.asked[0][0]
    assert first.train.backbone_lr == 1e-3 and first.train.weight_decay == 0.0  # trial 0: the default
    assert outcome.chosen_is_default and outcome.chosen["train.backbone_lr"] == 1e-3
    default_ids = {spec.run_id for spec in training.asked[-1] if spec.train.backbone_lr == 1e-3}
    assert len(default_ids) == 3  # the tuned and the default configuration are the same runs
    assert outcome.tuned == outcome.default
    (again,), _ = _tune(tmp_path, _request(budget=4), DefaultIsBest())
    study = optuna.load_study(study_name=again.study, storage=_storage(tmp_path))
    assert sum(t.params["train.backbone_lr"] == 1e-3 for t in study.get_trials()) == 1  # enqueued once


def _storage(folder):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nlbench.tune.study import JOURNAL

    return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))


def test_trials_a_stopped_tune_started_are_trained_and_scored_not_replaced(tmp_path):
    request = _request(budget=2)
    study = MethodStudy("standard", request, load_config(None), get_registry(), tmp_path)
    trial, values = study.ask()  # asked, then the tune stopped before its run ended
    (outcome,), training = _tune(tmp_path, request)
    first = training.asked[0]
    assert len(first) == 1 and first[0].train.backbone_lr == pytest.approx(values["train.backbone_lr"])
    assert outcome.trials == 2  # the started trial counts toward the budget


def test_a_compute_budget_counts_network_epochs(tmp_path):
    (outcome,), training = _tune(tmp_path, _request(budget=10, unit="network-epochs"), FakeTraining(cost=3.0))
    assert outcome.spent == 9 and outcome.trials == 3  # a fourth trial would make 12 > 10


def test_a_failed_run_counts_as_a_failed_trial(tmp_path):
    def failing(specs, observers):
        return {}

    config, registry = load_config(None), get_registry()
    (outcome,) = run_tuning(_request(budget=2), config, registry, tmp_path, failing, say=lambda text: None)
    assert outcome.trials == 2 and outcome.failed == 2 and outcome.chosen is None and outcome.tuned == {}


@pytest.mark.parametrize("changes, message", [
    ({"tune_seeds": [1]}, "both tuning and evaluation seeds"),
    ({"unit": "hours"}, "--budget-unit"),
    ({"sampler": "grid"}, "--sampler"),
    ({"budget": 2.5}, "--budget must be a positive whole number"),
    ({"budget": 0}, "--budget must be"),
])
def test_bad_requests_are_refused_before_any_study(changes, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        _request(**changes).check()


def test_status_of_a_store_without_studies(cli, tmp_path):
    result = cli("tune", "--status", "--runs-dir", str(tmp_path))
    assert result.code == 0 and "no tuning studies" in result.out


@pytest.mark.slow
def test_tune_from_the_command_line_trains_trials_and_compares(cli, tmp_path):
    runs = tmp_path / "runs"
    args = ["tune", "--methods", "standard", "--budget", "2", "--seeds", "1,2", "--epochs", "1",
            "--sampler", "random", "--runs-dir", str(runs), "--export", str(tmp_path / "chosen.toml"), *TINY]
    result = cli(*args)
    assert result.code == 0, result.err
    assert "standard trial 0: val" in result.err and "standard trial 1: val" in result.err
    assert "Tuned vs default" in result.out and "standard" in result.out
    import tomllib

    chosen = tomllib.loads((tmp_path / "chosen.toml").read_text())["chosen"]["standard"]
    assert chosen["trials"] == 2 and any(item.startswith("train.backbone_lr=") for item in chosen["set"])
    status = cli("tune", "--status", "--runs-dir", str(runs))
    assert status.code == 0 and re.search(r"standard-\w+ +│ 2 scored +│", status.out), status.out
    again = cli(*args)  # the study is complete: nothing is trained again
    assert again.code == 0 and "trial" not in again.err and "[1/" not in again.err
    table = cli("table", "--tuned", "--runs-dir", str(runs))
    assert table.code == 0 and "Tuned vs default" in table.out and "median pruner" in table.out
    assert re.search(r"│ standard +│ +2 +│", table.out), table.out
    assert cli("table", "--tuned", "--methods", "cct", "--runs-dir", str(runs)).code == 2


def _study_with_history(tmp_path, finals=(60.0, 62.0, 64.0), epochs=6):
    """A study whose first three trials ran all ``epochs`` epochs, ending at ``finals``."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nlbench.tune.pruning import make_pruner

    journal = str(tmp_path / "journal.log")
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(journal)),
                                pruner=make_pruner("median", epochs), direction="maximize")
    for final in finals:
        trial = study.ask()
        for step in range(1, epochs + 1):
            trial.report(final * step / epochs, step)
        study.tell(trial, final)
    return journal, study


def _epoch(epoch: int, val: float, phase: str = "train") -> dict:
    return {"phase": phase, "epoch": epoch, "epochs": 6, "val": {"model": val}}


def test_the_pruner_stops_a_trial_below_the_median_after_the_warmup_and_not_before(tmp_path):
    from nlbench.errors import RunStopped
    from nlbench.tune.pruning import TrialPruner

    journal, study = _study_with_history(tmp_path)
    poor = study.ask()
    pruner = TrialPruner(journal, "s", poor._trial_id, "median", 6)
    pruner.on_epoch_end(run=None, record=_epoch(0, 1.0))  # far below, but inside the warm-up (2 epochs)
    pruner.on_epoch_end(run=None, record=_epoch(1, 1.0))
    pruner.on_epoch_end(run=None, record=_epoch(0, 99.0, phase="distill"))  # a later phase is not judged
    with pytest.raises(RunStopped, match="pruned by nlbench tune after epoch 3"):
        pruner.on_epoch_end(run=None, record=_epoch(2, 1.0))
    good = study.ask()
    keeper = TrialPruner(journal, "s", good._trial_id, "median", 6)
    for epoch in range(6):
        keeper.on_epoch_end(run=None, record=_epoch(epoch, 70.0 * (epoch + 1) / 6))
    keeper.on_epoch_end(run=None, record=_epoch(5, 70.0))  # a resumed run reports an epoch again: no error


class PrunableTraining(FakeTraining):
    """FakeTraining whose trial runs go through their pruners epoch by epoch, as the engine calls them."""

    def __call__(self, specs, observers=None) -> dict:
        from nlbench.errors import RunStopped

        out = super().__call__(specs, observers)
        for spec in specs:
            final = out[spec.run_id]["metrics"]["model"]["val_curve"][-1]
            try:
                for epoch in range(6):
                    for observer in (observers or {}).get(spec.run_id, []):
                        observer.on_epoch_end(run=None, record=_epoch(epoch, final * (epoch + 1) / 6))
            except RunStopped:
                out[spec.run_id] = {"run_id": spec.run_id, "stopped": (epoch + 1, 6)}
        return out


def test_pruned_trials_count_their_epochs_and_report_what_they_saved(tmp_path):
    request = _request(budget=15, unit="network-epochs", base=RunRequest(epochs=6, sets=list(SETS)))
    (outcome,), training = _tune(tmp_path, request, PrunableTraining(cost=3.0))
    assert outcome.pruned >= 1 and outcome.saved > 0
    assert outcome.spent <= 15
    assert outcome.spent < 3 * outcome.trials  # a pruned trial costs the epochs it trained, not a whole trial
    study = MethodStudy("standard", request, load_config(None), get_registry(), tmp_path).study
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert outcome.chosen == max(complete, key=lambda t: t.value).params


def test_a_stopped_run_is_left_resumable_and_reported_stopped_not_failed(tmp_path):
    from nlbench.executors import ExecutorOptions
    from nlbench.spec.resolve import resolve_spec
    from nlbench.sweep.worker import run_dir_of, train_one

    spec = resolve_spec(RunRequest(epochs=2, sets=list(SETS)), load_config(None), get_registry())
    options = ExecutorOptions(runs_dir=str(tmp_path), observers={spec.run_id: [StopAfterFirstEpoch()]}, quiet=True)
    report = train_one(spec.to_json(), options)
    assert report.outcome == "stopped" and "stopped on purpose" in report.error
    state = run_dir_of(spec.to_json(), options).state()
    assert state.state == "interrupted" and state.status["epoch"] == 1
    again = train_one(spec.to_json(), ExecutorOptions(runs_dir=str(tmp_path), quiet=True))
    assert again.outcome == "done" and again.resumed.startswith("resumed")


class StopAfterFirstEpoch:
    """An observer that stops its run after the first epoch."""

    @__import__("nlbench").hookimpl
    def on_epoch_end(self, run, record):
        from nlbench.errors import RunStopped

        raise RunStopped("stopped on purpose")
