"""Search spaces: which options ``nlbench tune`` searches, over what range and on what scale.

A space is declared where its options are, as :class:`nlbench.options.Tune` metadata: on a
method's ``HParams`` fields (keys ``methods.<name>.<field>``) and, once for every method, on the
shared pipeline knobs of :class:`nlbench.settings.TrainSettings` (keys ``train.<field>``).
benchmark.toml overrides both, without touching any code (docs/tuning.md)::

    [tune.spaces.cct]                          # one method's space
    lambda_max = [0.5, 1.0]                    # a range; the declared scale is kept
    beta = {low = 0.3, high = 3, log = true}   # a range and its scale
    term_weights = ["equal", "mean"]           # a choice (strings, booleans)
    ramp_fraction = {choices = [0.8, 0.9]}     # a choice of numbers
    [tune.shared]                              # the shared knobs, for every method
    weight_decay = false                       # not tuned

A declaration that does not fit its field (outside the field's range or choices, or leaving the
default out) is a :class:`~nlbench.errors.PluginError`: the default must be a point of the declared
space, so that a study can begin with it and never select worse than it on the validation split.
An override may leave the default out (a user's narrower search); its mistakes are
:class:`~nlbench.errors.ConfigError` naming the file and the key.
Nothing here imports torch or Optuna: :func:`suggest` only calls the trial it is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nlbench.errors import ConfigError, PluginError
from nlbench.options import OptionInfo, Tune, check_value, coerce, field_metadata, option_infos

if TYPE_CHECKING:  # pragma: no cover
    from nlbench.registry import Registry
    from nlbench.spec.config import Config

#: The ``[tune]`` table of benchmark.toml: per-method overrides, and those of the shared knobs.
SPACES, SHARED = "spaces", "shared"


@dataclass(frozen=True)
class Dimension:
    """One tuned option: its ``--set`` key, kind, range or choices, scale, and where it was declared."""

    #: The ``--set`` key of the option: ``methods.cct.lambda_max``, ``train.backbone_lr``.
    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    #: "method" (the method's HParams), "shared" (TrainSettings) or "benchmark.toml" (an override).
    source: str = "method"
    #: The option's default (inside a declared space; an override may leave it out).
    default: Any = None

    @property
    def name(self) -> str:
        """The option's name without its table: ``lambda_max``."""
        return self.key.rsplit(".", 1)[-1]

    @property
    def scale(self) -> str:
        """How values are drawn: ``linear``, ``log``, ``int``, ``int, log`` or ``choice``."""
        if self.kind == "categorical":
            return "choice"
        base = "int" if self.kind == "int" else ""
        return ", ".join(part for part in (base, "log" if self.log else ("" if base else "linear")) if part)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of the space (True is not 1, as in option checks)."""
        if self.choices is not None:
            return any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def describe(self) -> str:
        """The space as users read it: ``[0.3, 1]`` or ``0, 1e-05, 0.0001``."""
        if self.choices is not None:
            return ", ".join(format_value(c) for c in self.choices)
        return f"[{format_value(self.low)}, {format_value(self.high)}]"


def method_space(method_cls: type) -> dict[str, Dimension]:
    """The space a method declares on its ``HParams`` fields, checked (a :class:`PluginError` if it does not fit)."""
    return _declared(method_cls.HParams, f"methods.{method_cls.name}", "method",
                     f"method {method_cls.name} ({method_cls.HParams.__name__})")


def shared_space() -> dict[str, Dimension]:
    """The shared pipeline knobs every method is tuned over, declared once on TrainSettings."""
    from nlbench.settings import TrainSettings

    return _declared(TrainSettings, "train", "shared", "TrainSettings")


def search_space(method_cls: type, config: Config | None = None) -> dict[str, Dimension]:
    """Everything ``nlbench tune`` searches for one method: its own space, then the shared knobs.

    ``config``'s ``[tune.spaces.<method>]`` and ``[tune.shared]`` tables override the
    declarations (checked: a :class:`ConfigError` naming the file, the key and what is allowed).
    """
    tune = config.tune if config is not None else {}
    space = method_space(method_cls)
    overrides = tune.get(SPACES, {}).get(method_cls.name, {})
    _apply(space, overrides, method_cls.HParams, f"methods.{method_cls.name}", f"tune.{SPACES}.{method_cls.name}",
           _where(config), f"method {method_cls.name}")
    return {**space, **_shared(config)}


def check_overrides(config: Config, registry: Registry) -> None:
    """Check every table of ``[tune]``: each ``[tune.spaces.<name>]`` names a registered method and
    every override fits its option (a :class:`ConfigError` naming the file and the key)."""
    spaces = config.tune.get(SPACES, {})
    for name in spaces:
        if name not in registry.methods:
            known = ", ".join(sorted(registry.methods)) or "(none)"
            raise ConfigError(f"{_where(config)}: [tune.{SPACES}.{name}]: no method is called {name!r}; known: "
                              f"{known}. The shared knobs ([train] settings) go in [tune.{SHARED}].")
    for name in spaces:
        search_space(registry.method(name), config)
    _shared(config)


def suggest(trial: Any, space: dict[str, Dimension]) -> dict[str, Any]:
    """Draw one point of ``space`` from an Optuna trial: ``{--set key: value}``.

    Each dimension becomes ``trial.suggest_float(key, low, high, log=...)``, ``suggest_int`` or
    ``suggest_categorical(key, choices)``, under its ``--set`` key as the parameter name, so a
    study's parameters read like the settings they set. Any object with these methods will do
    (Optuna itself is imported by whoever makes the trial).
    """
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.kind == "categorical":
            values[key] = trial.suggest_categorical(key, list(dim.choices or ()))
        elif dim.kind == "int":
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)  # type: ignore[arg-type]
        else:
            values[key] = trial.suggest_float(key, float(dim.low), float(dim.high), log=dim.log)  # type: ignore[arg-type]
    return values


def set_items(values: dict[str, Any]) -> list[str]:
    """``--set`` items (``key=value``, the value written as TOML) of a point drawn by :func:`suggest`."""
    return [f"{key}={_toml(value)}" for key, value in values.items()]


def _shared(config: Config | None) -> dict[str, Dimension]:
    """The shared knobs' space with ``[tune.shared]`` applied."""
    from nlbench.settings import TrainSettings

    shared = shared_space()
    tune = config.tune if config is not None else {}
    _apply(shared, tune.get(SHARED, {}), TrainSettings, "train", f"tune.{SHARED}", _where(config),
           "the [train] settings")
    return shared


# -- declarations --------------------------------------------------------------------------------
def _declared(options_cls: type, prefix: str, source: str, owner: str) -> dict[str, Dimension]:
    try:
        marks = field_metadata(options_cls, Tune)
    except ValueError as err:
        raise PluginError(f"{owner}: {err}.") from None
    infos = {info.name: info for info in option_infos(options_cls)} if marks else {}
    space: dict[str, Dimension] = {}
    for name, mark in marks.items():
        info = infos[name]
        try:
            dim = _dimension(info, f"{prefix}.{name}", source, mark.low, mark.high, mark.log, mark.choices)
        except ValueError as err:
            raise PluginError(f"{owner}: the Tune of {name} does not fit the option: {err}.") from None
        if not dim.contains(info.default):
            raise PluginError(f"{owner}: the default {name} = {format_value(info.default)} lies outside its Tune space "
                              f"{dim.describe()}; widen the space or change the default (a study begins with the "
                              f"defaults).")
        space[dim.key] = dim
    return space


def _dimension(info: OptionInfo, key: str, source: str, low: Any, high: Any, log: bool,
               choices: tuple[Any, ...] | None) -> Dimension:
    """A dimension over option ``info``, checked against the option's type, range and choices (ValueError)."""
    kind = info.kind
    if info.runtime:
        raise ValueError(f"{info.name} changes where or how fast a run computes, never its results: nothing to tune")
    if kind not in (int, float, bool, str):
        raise ValueError(f"{info.name} is a {kind.__name__} option, which cannot be tuned")
    if choices is not None:
        values = []
        for choice in choices:
            if isinstance(choice, (list, dict)):
                raise ValueError(f"the choice {_toml(choice)} is not a single value")
            try:
                values.append(check_value(choice, info, key))
            except ConfigError as err:
                raise ValueError(f"the choice {_toml(choice)} does not fit: {err}".rstrip(".")) from None
        if len(values) < 2 or len({repr(v) for v in values}) != len(values):
            raise ValueError("choices must be at least two different values (to fix a value, set it in [methods.NAME] "
                             "or [train] and write false here)")
        return Dimension(key, "categorical", choices=tuple(values), source=source, default=info.default)
    if info.choices is not None or kind in (bool, str):
        raise ValueError(f"{info.name} takes a list of choices, not a range")
    try:
        low, high = coerce(low, kind, "low"), coerce(high, kind, "high")
    except ConfigError as err:
        raise ValueError(str(err).rstrip(".")) from None
    if not low < high:
        raise ValueError(f"low ({format_value(low)}) must be below high ({format_value(high)})")
    if info.range is not None and not (info.range.contains(low) and info.range.contains(high)):
        raise ValueError(f"[{format_value(low)}, {format_value(high)}] leaves the option's range {info.range}")
    if log and low <= 0:
        raise ValueError(f"a log scale needs low > 0, got {format_value(low)}")
    return Dimension(key, "int" if kind is int else "float", low, high, bool(log), source=source, default=info.default)


# -- overrides -----------------------------------------------------------------------------------
def _apply(space: dict[str, Dimension], table: dict[str, Any], options_cls: type, prefix: str, table_name: str,
           where: str, owner: str) -> None:
    """Apply one override table of benchmark.toml's ``[tune]`` to ``space``, in place."""
    if not table:
        return
    infos = {info.name: info for info in option_infos(options_cls)}
    for name, value in table.items():
        if name not in infos:
            known = ", ".join(infos) or "(none)"
            raise ConfigError(f"{where}: unknown key {table_name}.{name}: {owner} has no option {name!r}; known: "
                              f"{known}.")
        key = f"{prefix}.{name}"
        declared = space.get(key)
        try:
            parsed = _parse(value)
            if parsed is None:
                space.pop(key, None)
                continue
            low, high, log, choices = parsed
            kept = log is None and declared is not None and declared.log
            try:
                dim = _dimension(infos[name], key, "benchmark.toml", low, high, bool(log) or kept, choices)
            except ValueError as err:
                if kept and "log scale" in str(err):
                    raise ValueError(f"{err} (the declared scale is log; write {{low = {_toml(low)}, high = "
                                     f"{_toml(high)}, log = false}} for a linear one)") from None
                raise
        except ValueError as err:
            raise ConfigError(f"{where}: {table_name}.{name} = {_toml(value)}: {err}; allowed: "
                              f"{_allowed(infos[name])}.") from None
        space[key] = dim


def _parse(value: Any) -> tuple[Any, Any, bool | None, tuple[Any, ...] | None] | None:
    """(low, high, log or None to keep the declared scale, choices) of an override; None for ``false``."""
    if value is False:
        return None
    if value is True:
        raise ValueError("true is not a space (false stops tuning the option)")
    if isinstance(value, list):
        if value and all(_is_number(v) for v in value):
            if len(value) != 2:
                raise ValueError(f"a list of numbers is a range [low, high]; for a choice of numbers write "
                                 f"{{choices = {_toml(value)}}}")
            return value[0], value[1], None, None
        return None, None, None, tuple(value)
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"low", "high", "log", "choices"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (a range is {{low, high, log}}, a choice {{choices}})")
        if "choices" in value:
            if len(value) != 1 or not isinstance(value["choices"], list):
                raise ValueError("{choices = [..]} takes a list of values and nothing else")
            return None, None, None, tuple(value["choices"])
        if "low" not in value or "high" not in value:
            raise ValueError("a range needs both low and high")
        log = value.get("log")
        if log is not None and not isinstance(log, bool):
            raise ValueError(f"log must be true or false, got {_toml(log)}")
        return value["low"], value["high"], log, None
    raise ValueError("not a space")


def _allowed(info: OptionInfo) -> str:
    """What an override of option ``info`` may be."""
    if info.runtime or info.kind not in (int, float, bool, str):
        return "nothing (this option cannot be tuned); remove the key"
    if info.choices is not None:
        return "a list of choices among " + ", ".join(_toml(c) for c in info.choices) + ", or false"
    if info.kind is bool:
        return "[true, false], or false"
    if info.kind is str:
        return 'a list of strings such as ["a", "b"], or false'
    bounds = info.range
    inside = "" if bounds is None else f" inside {bounds}" if None not in (bounds.low, bounds.high) else f" {bounds}"
    return (f"[low, high] or {{low = .., high = .., log = true}} with {info.kind.__name__}s{inside}, "
            f"{{choices = [..]}}, or false (not tuned)")


def _where(config: Config | None) -> str:
    source = getattr(config, "source", None)
    return str(source) if source is not None else "benchmark.toml"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_value(value: Any) -> str:
    """A number as users read it (``1e-05``, ``0.7``, ``25``), anything else as TOML."""
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return _toml(value)


def _toml(value: Any) -> str:
    """``value`` written as TOML (``--set`` values and benchmark.toml, in messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)
