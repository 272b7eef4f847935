"""Typed options: the one place where settings, hyperparameters and dataset options are checked.

Every option set of nlbench is a dataclass: :class:`nlbench.settings.TrainSettings`, a method's
``HParams``, a dataset's ``Options``. Each field describes itself:

- its type (``int``, ``float``, ``bool``, ``str``, ``list``), checked strictly: a boolean is never
  an integer or a float, floats must be finite;
- ``Literal[...]`` for a choice of values (``fidelity: Literal["paper", "code"] = "paper"``);
- ``Annotated[float, Range(0, 1)]`` for an allowed range (bounds included unless ``open``);
- ``Annotated[float, Range(0, 1), Tune(0.3, 1.0)]`` for the search space ``nlbench tune`` explores
  (:class:`Tune`; checked against the range and the default by :mod:`nlbench.tune.space`);
- a ``#:`` comment above the field: its one-line documentation, listed by
  ``nlbench methods NAME`` and ``nlbench datasets NAME``;
- ``runtime(default)`` for a field that changes where or how fast a run computes but not its
  numbers (cache placement, ``torch.compile``): such fields never enter the run id;
- ``added(default)`` for a field added after runs were stored: it enters the run id only when set
  to another value (:func:`identity_dict` for a dataset's options), so stored ids still hold.

:func:`build_options` turns a plain dict (from benchmark.toml or ``--set``) into an instance, with
one clear :class:`~nlbench.errors.ConfigError` per problem. Cross-field rules stay in a method's
``validate`` or an options class's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import sys
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from nlbench.errors import ConfigError

#: Field metadata key of options that do not enter the run id.
RUNTIME = "nlbench_runtime"


@dataclass(frozen=True)
class Range:
    """The allowed interval of a numeric option: ``Annotated[int, Range(1, None)]`` means >= 1."""

    low: float | None = None
    high: float | None = None
    #: Whether ``low`` itself is excluded (``Range(0, None, low_open=True)`` means > 0).
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "any"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Tune:
    """The search space of a hyperparameter for ``nlbench tune``, written beside its :class:`Range`.

    ``Tune(0.3, 1.0)``: uniform on [0.3, 1.0]; ``Tune(1e-4, 1e-2, log=True)``: log-uniform;
    ``Tune(1, 5)`` on an ``int`` field: the integers 1 to 5; ``Tune(choices=(0.0, 1e-4))``: one of
    the values (also for ``bool`` and ``Literal`` fields). Only metadata: it never enters a run id.
    Here the marker checks itself; :func:`nlbench.tune.space.method_space` checks it against the
    field (inside its range or choices, the default inside the space).
    """

    low: float | None = None
    high: float | None = None
    #: Sample log-uniformly (multiplicative knobs: learning rates, loss weights spanning decades).
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError(f"{self!r}: give either low and high (with log) or choices, not both")
            choices = tuple(self.choices) if isinstance(self.choices, (list, tuple)) else None
            if choices is None or len(choices) < 2 or len(set(map(repr, choices))) != len(choices):
                raise ValueError(f"{self!r}: choices must be a tuple of at least two different values")
            object.__setattr__(self, "choices", choices)
            return
        bounds = (self.low, self.high)
        if any(b is None or isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b)
               for b in bounds):
            raise ValueError(f"{self!r}: low and high must be finite numbers (or give choices)")
        if not self.low < self.high:  # type: ignore[operator]
            raise ValueError(f"{self!r}: low must be below high")
        if self.log and self.low <= 0:  # type: ignore[operator]
            raise ValueError(f"{self!r}: a log scale needs low > 0")


def runtime(default: Any) -> Any:
    """A dataclass field that does not enter the run id (placement, speed: never the numbers)."""
    return dataclasses.field(default=default, metadata={RUNTIME: True})


#: Metadata key of fields added after runs were stored: left out of the run id while at their default.
ADDED = "nlbench_added"


def added(default: Any) -> Any:
    """A field added after runs were stored: it enters the run id only when set to another value."""
    return dataclasses.field(default=default, metadata={ADDED: True})


def is_added(field: dataclasses.Field) -> bool:
    """Whether a dataclass field was declared with :func:`added`."""
    return bool(field.metadata.get(ADDED))


def identity_dict(options: Any) -> dict[str, Any]:
    """An options dataclass as a plain dict, its :func:`added` fields left out while at their default
    and its :func:`runtime` fields left out.

    What a dataset's options contribute to the run id and the decode cache key: an option added
    later enters them only when set, so the runs and images stored before it keep their ids.
    """
    values = dataclasses.asdict(options)
    for field in dataclasses.fields(options):
        if (is_added(field) and values[field.name] == _default(field)) or field.metadata.get(RUNTIME):
            del values[field.name]  # a runtime option (e.g. where a file is) says its content elsewhere
    return values


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return field.default


def is_runtime(field: dataclasses.Field) -> bool:
    """Whether a dataclass field was declared with :func:`runtime`."""
    return bool(field.metadata.get(RUNTIME))


@dataclass(frozen=True)
class OptionInfo:
    """What one option is: name, default, kind, allowed values and its documentation."""

    name: str
    default: Any
    kind: type
    choices: tuple[Any, ...] | None = None
    range: Range | None = None
    doc: str = ""
    runtime: bool = False

    def describe_type(self) -> str:
        """The type as users read it: ``int >= 1``, ``one of paper, code``, ``float [0, 1]``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) if c == "" else str(c) for c in self.choices)
        text = self.kind.__name__
        return f"{text} {self.range}" if self.range is not None else text


def option_infos(cls: type) -> list[OptionInfo]:
    """The options of a dataclass, in declaration order (see the module docstring)."""
    hints = _type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    infos = []
    for field in dataclasses.fields(cls):
        kind, choices, bounds = _describe(hints.get(field.name, type(getattr(defaults, field.name))))
        infos.append(OptionInfo(field.name, getattr(defaults, field.name), kind, choices, bounds,
                                docs.get(field.name, ""), is_runtime(field)))
    return infos


def build_options(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build an options dataclass from a dict, rejecting unknown keys and wrong values by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table of settings, got {values!r}.")
    infos = {info.name: info for info in option_infos(cls)}
    unknown = sorted(set(values) - set(infos))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; known keys: {', '.join(sorted(infos)) or '(none)'}.")
    converted = {key: check_value(value, infos[key], f"{where}.{key}") for key, value in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {where}: {err}.") from None


def check_value(value: Any, info: OptionInfo, where: str) -> Any:
    """``value`` converted to the option's type and checked against its choices and range."""
    value = coerce(value, info.kind, where)
    if info.choices is not None and value not in info.choices:
        shown = ", ".join(repr(c) for c in info.choices)
        raise ConfigError(f"{where} must be one of {shown}, got {value!r}.")
    if info.range is not None and not info.range.contains(value):
        interval = info.range.low is not None and info.range.high is not None
        raise ConfigError(f"{where} must be {'in ' if interval else ''}{info.range}, got {value!r}.")
    return value


_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}


def coerce(value: Any, kind: type, where: str) -> Any:
    """Convert ``value`` to ``kind`` (int, float, bool, str, list, tuple) strictly, or explain why not."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif kind is int:
        if isinstance(value, bool):
            pass  # true is not 1: `--set train.batch_size=true` must not train at batch size 1
        elif isinstance(value, int):
            return value
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
    elif kind is float:
        number: float | None = None
        if isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{where} must be a finite number, got {value!r}.")
            return number
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind in (list, tuple):
        if isinstance(value, (list, tuple)):
            return kind(value)
    else:
        return value
    name = "list" if kind is tuple else kind.__name__  # a tuple option is written as a list
    article = "an" if name[0] in "aeiou" else "a"
    raise ConfigError(f"{where} must be {article} {name}, got {value!r}.")


def field_docs(cls: type) -> dict[str, str]:
    """The ``#:`` comments written above each field of a dataclass, joined into one line each."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"([A-Za-z_]\w*)\s*:", stripped)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        if not stripped.startswith("#"):
            pending = []
    return docs


def first_sentence(text: str) -> str:
    """The first sentence of a doc comment, for one-line listings."""
    match = re.match(r"(.+?[.;])(\s|$)", text)
    return match.group(1) if match else text


def field_metadata(cls: type, kind: type) -> dict[str, Any]:
    """The ``Annotated`` metadata of type ``kind`` (e.g. :class:`Tune`) of each field of a dataclass that has one."""
    hints = _type_hints(cls)
    found: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        hint = hints.get(field.name)
        if get_origin(hint) is not Annotated:
            continue
        marks = [extra for extra in get_args(hint)[1:] if isinstance(extra, kind)]
        if len(marks) > 1:
            raise ValueError(f"{cls.__name__}.{field.name} has {len(marks)} {kind.__name__} annotations; give one")
        if marks:
            found[field.name] = marks[0]
    return found


def _type_hints(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    try:
        return typing.get_type_hints(cls, globalns=vars(module) if module else None, include_extras=True)
    except Exception:  # an annotation that cannot be evaluated: fall back to the defaults' types
        return {}


def _describe(hint: Any) -> tuple[type, tuple[Any, ...] | None, Range | None]:
    """(base type, choices, range) of a type hint."""
    bounds = None
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        bounds = next((e for e in extras if isinstance(e, Range)), None)
    if get_origin(hint) is Literal:
        choices = tuple(_flatten(get_args(hint)))
        return type(choices[0]), choices, bounds
    origin = get_origin(hint)
    if origin in (list, tuple):
        return origin, None, bounds
    if isinstance(hint, type):
        return hint, None, bounds
    return object, None, bounds


def _flatten(values: tuple[Any, ...]) -> list[Any]:
    """``Literal[SOME_TUPLE]`` is allowed: a tuple constant holding the choices."""
    out: list[Any] = []
    for value in values:
        out.extend(value) if isinstance(value, tuple) else out.append(value)
    return out
