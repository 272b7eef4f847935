"""Search spaces for ``nlbench tune``: the methods' declarations, benchmark.toml's overrides, suggest()."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import pytest

from nlbench.errors import ConfigError, PluginError
from nlbench.options import Range, Tune, check_value, option_infos, runtime
from nlbench.plugins import get_registry
from nlbench.settings import TrainSettings
from nlbench.spec.config import load_config, parse_set
from nlbench.tune.space import Dimension, method_space, search_space, set_items, shared_space, suggest

BUILT_IN = sorted(get_registry().methods)


def _infos(cls: type) -> dict:
    return {info.name: info for info in option_infos(cls)}


def _config(tmp_path, text: str):
    path = tmp_path / "tune.toml"
    path.write_text(text)
    return load_config(path)


# -- declarations ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_method_declares_a_space_inside_its_options_with_the_defaults_inside(name):
    cls = get_registry().method(name)
    own = method_space(cls)
    infos = _infos(cls.HParams)
    assert name == "standard" or 1 <= len(own) <= 3, own  # standard has no hyperparameters at all
    space = search_space(cls)
    assert list(space)[:len(own)] == list(own) and {"train.backbone_lr", "train.classifier_lr"} <= set(space)
    for key, dim in space.items():
        table, field = key.rsplit(".", 1)
        info = (infos if table == f"methods.{name}" else _infos(TrainSettings))[field]
        assert dim.contains(info.default), (key, info.default, dim)
        assert not info.runtime
        if dim.kind == "categorical":
            assert len(dim.choices) >= 2
            for choice in dim.choices:
                assert check_value(choice, info, key) == choice
        else:
            assert dim.kind == info.kind.__name__ and dim.low < dim.high
            assert info.range is None or (info.range.contains(dim.low) and info.range.contains(dim.high))
            assert not dim.log or dim.low > 0


def test_the_shared_knobs_are_the_learning_rates_log_uniform_and_weight_decay_with_zero():
    shared = shared_space()
    assert list(shared) == ["train.backbone_lr", "train.classifier_lr", "train.weight_decay"]
    assert all(d.source == "shared" and d.log for d in list(shared.values())[:2])
    assert shared["train.weight_decay"].choices[0] == 0.0 == TrainSettings().weight_decay


# Options classes with a declaration that does not fit its field (module level: their hints resolve here).
@dataclass
class OutOfRange:
    lam: Annotated[float, Range(0, 1), Tune(0.5, 2.0)] = 0.7


@dataclass
class DefaultOutside:
    lam: Annotated[float, Range(0, 1), Tune(0.1, 0.5)] = 0.7


@dataclass
class RangeOnChoices:
    mode: Annotated[Literal["a", "b"], Tune(0, 1)] = "a"


@dataclass
class ChoiceNotAllowed:
    mode: Annotated[Literal["a", "b"], Tune(choices=("a", "c"))] = "a"


@dataclass
class FloatBoundsOnInt:
    steps: Annotated[int, Range(1, None), Tune(1.5, 4)] = 2


@dataclass
class TunedRuntime:
    cache: Annotated[int, Tune(1, 4)] = runtime(2)


@dataclass
class TwoMarks:
    lam: Annotated[float, Tune(0, 1), Tune(0, 2)] = 0.5


@pytest.mark.parametrize("options,message", [
    (OutOfRange, "[0.5, 2] leaves the option's range [0, 1]"),
    (DefaultOutside, "the default lam = 0.7 lies outside its Tune space [0.1, 0.5]"),
    (RangeOnChoices, "mode takes a list of choices, not a range"),
    (ChoiceNotAllowed, "must be one of 'a', 'b', got 'c'"),
    (FloatBoundsOnInt, "low must be an int, got 1.5"),
    (TunedRuntime, "cache changes where or how fast a run computes"),
    (TwoMarks, "has 2 Tune annotations"),
])
def test_a_declaration_that_does_not_fit_its_option_is_a_plugin_error_naming_it(options, message):
    method = type("Fake", (), {"name": "fake", "HParams": options})
    with pytest.raises(PluginError) as err:
        method_space(method)
    assert message in str(err.value) and "method fake" in str(err.value)


@pytest.mark.parametrize("args", [dict(low=1, high=1), dict(low=0, high=1, log=True), dict(choices=(1,)),
                                  dict(choices=(1, 1)), dict(low=0, high=1, choices=(0, 1)), dict(low=0),
                                  dict(low=0, high=math.inf), dict(low=False, high=True)])
def test_a_tune_marker_checks_itself_when_the_plugin_is_imported(args):
    with pytest.raises(ValueError):
        Tune(**args)


# -- overrides ---------------------------------------------------------------------------------------
def test_benchmark_toml_overrides_ranges_scales_choices_and_drops_dimensions(tmp_path):
    config = _config(tmp_path, """
[tune.spaces.cct]
lambda_max = [0.5, 0.8]
beta = [0.5, 2]
term_weights = ["equal", "mean"]
ramp_fraction = {choices = [0.8, 0.9]}
[tune.spaces.gce]
q = false
[tune.shared]
backbone_lr = {low = 1e-4, high = 1e-3, log = false}
weight_decay = false
lr_decay = [0.9, 1.0]
""")
    cct = get_registry().method("cct")
    space = search_space(cct, config)
    assert space["methods.cct.lambda_max"] == Dimension("methods.cct.lambda_max", "float", 0.5, 0.8, False,
                                                        source="benchmark.toml", default=0.9)
    assert space["methods.cct.beta"].log  # a plain [low, high] keeps the declared log scale
    assert space["methods.cct.term_weights"].choices == ("equal", "mean")
    assert space["methods.cct.ramp_fraction"].choices == (0.8, 0.9)
    assert not space["train.backbone_lr"].log and space["train.backbone_lr"].source == "benchmark.toml"
    assert "train.weight_decay" not in space and space["train.lr_decay"].high == 1.0
    assert "methods.gce.q" not in search_space(get_registry().method("gce"), config)
    assert not space["methods.cct.lambda_max"].contains(0.9)  # an override may leave the default out


def test_tune_spaces_can_be_set_with_set_items_too():
    config = load_config(None, ["tune.spaces.cct.lambda_max=[0.4, 0.6]"])
    assert search_space(get_registry().method("cct"), config)["methods.cct.lambda_max"].high == 0.6


BAD = [
    ("[tune.spaces.nosuch]\nx = [1, 2]\n", "[tune.spaces.nosuch]: no method is called 'nosuch'; known: cct"),
    ("[tune.spaces.cct]\nnosuch = [0, 1]\n", "unknown key tune.spaces.cct.nosuch: method cct has no option"),
    ("[tune.spaces.cct]\nlambda_max = [0.5, 2]\n", "lambda_max = [0.5, 2]: [0.5, 2] leaves the option's range [0, 1]; "
                                                   "allowed: [low, high]"),
    ("[tune.spaces.cct]\nlambda_max = [0.8, 0.5]\n", "low (0.8) must be below high (0.5)"),
    ("[tune.spaces.cct]\nlambda_max = [0.5, 0.5]\n", "low (0.5) must be below high (0.5)"),
    ("[tune.spaces.cct]\nnetworks = [1.5, 3]\n", "networks = [1.5, 3]: low must be an int, got 1.5"),
    ("[tune.spaces.cct]\nlambda_max = \"high\"\n", "lambda_max = \"high\": not a space"),
    ("[tune.spaces.cct]\nlambda_max = true\n", "true is not a space (false stops tuning the option)"),
    ("[tune.spaces.cct]\nlambda_max = [0.1, 0.2, 0.3]\n", "for a choice of numbers write {choices = [0.1, 0.2, 0.3]}"),
    ("[tune.spaces.cct]\nterm_weights = [\"equal\", \"median\"]\n", "the choice \"median\" does not fit"),
    ("[tune.spaces.cct]\nbeta = {low = 1, high = 2, scale = \"log\"}\n", "unknown key 'scale'"),
    ("[tune.spaces.cct]\nbeta = {low = 1}\n", "a range needs both low and high"),
    ("[tune.shared]\nbackbone_lr = {low = 0, high = 1e-3, log = false}\n", "leaves the option's range > 0"),
    ("[tune.spaces.cct]\nkd_lr = {low = 0, high = 0.01, log = true}\n", "a log scale needs low > 0"),
    ("[tune.shared]\ncompile = [true, false]\n", "compile changes where or how fast a run computes"),
    ("[tune.shared]\nnosuch = [1, 2]\n", "unknown key tune.shared.nosuch"),
    ("[tune]\ntrials = 3\n", "unknown key tune.trials"),
    ("[tune.spaces]\ncct = 3\n", "[tune.spaces]"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_a_bad_override_exits_2_naming_the_file_the_key_and_what_is_allowed(cli, tmp_path, text, message):
    path = tmp_path / "tune.toml"
    path.write_text(text)
    result = cli("methods", "cct", "--config", str(path))
    err = " ".join(result.err.split())
    assert result.code == 2 and message in err and "tune.toml" in err, err
    assert result.out == ""  # nothing printed before the error


def test_a_bad_override_is_a_config_error_from_the_api_too(tmp_path):
    config = _config(tmp_path, "[tune.spaces.elr]\nlam = [0, 2]\n")
    with pytest.raises(ConfigError, match=r"tune\.toml: tune\.spaces\.elr\.lam = \[0, 2\]: a log scale needs low > 0, "
                                          r"got 0 \(the declared scale is log; write \{low = 0, high = 2, log = false\}"):
        search_space(get_registry().method("elr"), config)


# -- nlbench methods NAME --------------------------------------------------------------------------------
def test_methods_name_shows_the_space_and_the_shared_knobs_once_in_80_columns(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("methods", "cct")
    assert result.code == 0, result.err
    tail = result.out[result.out.index("tuned by `nlbench tune`"):]
    assert max(len(line) for line in result.out.splitlines()) <= 80
    rows = [line.split("│")[1:-1] for line in tail.splitlines() if line.startswith("│")]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert ["lambda_max", "0.9", "[0.3, 1]", "linear"] in cells and ["beta", "0.65", "[0.3, 5]", "log"] in cells
    assert ["train.weight_decay", "0", "0, 1e-05, 0.0001, 0.001", "choice"] in cells
    assert [c[0] for c in cells].index("train.backbone_lr") > [c[0] for c in cells].index("beta")
    assert "every method is tuned over them alike" in tail

    path = tmp_path / "tune.toml"
    path.write_text("[tune.spaces.cct]\nlambda_max = [0.5, 0.8]\n")
    shown = cli("methods", "cct", "--config", str(path))
    assert "lambda_max *" in shown.out and "[0.5, 0.8]" in shown.out and "* set in" in shown.out
    assert "The default of lambda_max lies outside the space" in " ".join(shown.out.split())
    standard = cli("methods", "standard")
    assert standard.code == 0 and "standard tunes no options of its own." in standard.out


# -- suggest -----------------------------------------------------------------------------------------
class FakeTrial:
    """Records the suggest calls and answers with the upper end (or last choice)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def suggest_float(self, name, low, high, log=False):
        self.calls.append(("float", name, low, high, log))
        return high

    def suggest_int(self, name, low, high, log=False):
        self.calls.append(("int", name, low, high, log))
        return high

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, tuple(choices)))
        return choices[-1]


def test_suggest_maps_each_dimension_to_the_trial_call_of_its_kind_and_scale():
    registry = get_registry()
    trial = FakeTrial()
    space = {**search_space(registry.method("cct")), **search_space(registry.method("coteaching"))}
    values = suggest(trial, space)
    assert ("float", "methods.cct.lambda_max", 0.3, 1.0, False) in trial.calls
    assert ("float", "methods.cct.beta", 0.3, 5.0, True) in trial.calls
    assert ("float", "train.backbone_lr", 1e-4, 1e-2, True) in trial.calls
    assert ("int", "methods.coteaching.num_gradual", 5, 15, False) in trial.calls
    assert ("categorical", "methods.coteaching.exponent", (0.5, 1.0, 2.0)) in trial.calls
    assert values["methods.cct.lambda_max"] == 1.0 and values["train.weight_decay"] == 1e-3
    assert all(space[key].contains(value) for key, value in values.items())
    items = set_items(values)
    assert [parse_set(item) for item in items] == list(values.items())  # --set items read back as drawn


def test_suggest_with_a_real_optuna_trial_stays_inside_the_space():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    registry = get_registry()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for name in ("rul", "dividemix", "eac"):
        space = search_space(registry.method(name))
        for _ in range(5):
            values = suggest(study.ask(), space)
            assert set(values) == set(space) and all(space[k].contains(v) for k, v in values.items()), values
        assert isinstance(values[f"methods.{name}." + next(iter(space)).rsplit(".", 1)[1]], (bool, float, int))
