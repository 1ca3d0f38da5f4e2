"""What every processing step shares: rows, errors, typed parameters and the registry.

A step's parameters are a frozen dataclass. :meth:`Step.from_params` checks a JSON
object against it up front — unknown keys, types, ranges, and the dataclass's own
``__post_init__`` checks — so that a bad pipeline fails before any row is read.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import orjson

from portal.errors import PlatformError
from portal.plugins import Registry

MAX_REMOVED_LINES = 1000


class Row(NamedTuple):
    """One record: its 1-based line in the source version, its split and its object."""

    line: int
    split: str
    data: dict[str, Any]


class PipelineError(PlatformError):
    """A pipeline that cannot run; ``param`` names the field (``steps[2].threshold``)."""

    code = "invalid_pipeline"


class PipelineCancelled(Exception):
    """Raised by the runner when ``should_stop()`` answers true."""


def param(
    default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None
) -> Any:
    """A parameter field with an inclusive numeric range, checked by :func:`build_params`."""
    return dataclasses.field(default=default, metadata={"min": min, "max": max})


P = TypeVar("P")


def build_params(cls: type[P], raw: Mapping[str, Any]) -> P:
    """``cls(**raw)`` after checking every key against ``cls``'s typed fields.

    Raises :class:`PipelineError` whose ``param`` is the offending field's name.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise PipelineError(f"Unknown parameter {key!r} (known: {known}).", param=key)
    hints = typing.get_type_hints(cls)
    values = {key: _coerce(key, raw[key], hints[key], fields[key].metadata) for key in raw}
    for name, field in fields.items():
        required = field.default is field.default_factory is dataclasses.MISSING
        if name not in values and required:
            raise PipelineError(f"Parameter {name!r} is required.", param=name)
    return cls(**values)


def _coerce(name: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
        return _coerce(name, value, hint, meta)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(arg) for arg in args)
            raise PipelineError(f"{name!r} must be one of {choices}.", param=name)
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not value:
            raise PipelineError(f"{name!r} must be a non-empty list.", param=name)
        return tuple(_coerce(name, item, args[0], meta) for item in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{name!r} must be an object.", param=name)
        return {key: _coerce(f"{name}.{key}", item, args[1], meta) for key, item in value.items()}
    return _scalar(name, value, hint, meta)


def _scalar(name: str, value: Any, hint: type, meta: Mapping[str, Any]) -> Any:
    # bool is an int in Python but never a number in a pipeline spec.
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise PipelineError(f"{name!r} must be of type {hint.__name__}.", param=name)
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        raise PipelineError(f"{name!r} must be between {low} and {high}.", param=name)
    return value


class Step(Generic[P]):
    """One processing step: typed parameters, a streaming :meth:`apply`, counters.

    A step instance processes one run; its counters describe that run.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Any]]
    #: The runner counts the rows reaching this step (per split) and calls :meth:`prepare`.
    needs_count: ClassVar[bool] = False

    def __init__(self, params: P) -> None:
        self.params = params
        self.removed = 0
        self.removed_lines: list[int] = []
        #: Position in the pipeline, for error messages (set by the runner).
        self.index: int | None = None

    @classmethod
    def from_params(cls, raw: Mapping[str, Any]) -> Step[Any]:
        """The step for a JSON parameter object; raises :class:`PipelineError`."""
        return cls(build_params(cls.Params, raw))

    def apply(self, rows: Iterator[Row]) -> Iterator[Row]:
        """The rows that leave this step, in order."""
        # Not an abstract method: mypy refuses abstract classes as a registry's base.
        raise NotImplementedError

    def prepare(self, counts: Mapping[str, int]) -> None:
        """Called before :meth:`apply` with row counts per split when ``needs_count``."""

    def counters(self) -> dict[str, Any]:
        return {"removed": self.removed}

    def describe(self) -> dict[str, Any]:
        """``{name, params, counters}``: what a version's manifest records for this step."""
        params = dataclasses.asdict(self.params)  # type: ignore[call-overload]
        params = {key: list(v) if isinstance(v, tuple) else v for key, v in params.items()}
        return {"name": self.name, "params": params, "counters": self.counters()}

    def fail(self, message: str, param: str) -> PipelineError:
        """A run-time :class:`PipelineError` naming this step's ``param``."""
        where = f"steps[{self.index}]." if self.index is not None else ""
        return PipelineError(message, param=where + param)

    def drop(self, row: Row) -> None:
        """Count ``row`` as removed by this step (its line kept for the audit trail)."""
        self.removed += 1
        if len(self.removed_lines) < MAX_REMOVED_LINES:
            self.removed_lines.append(row.line)


STEPS: Registry[Step[Any]] = Registry("step", Step)


def selected(data: dict[str, Any], fields: tuple[str, ...] | None) -> Any:
    """The part of a row a step looks at: the whole row, or the named top-level fields
    (a missing field counts as ``None``)."""
    if fields is None:
        return data
    return {name: data.get(name) for name in fields}


def dump_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """UTF-8 JSON without ASCII escapes; integers beyond 64 bits (which orjson refuses)
    go through the standard library."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, sort_keys=sort_keys).encode()


def load_json(line: bytes) -> Any:
    """The inverse of :func:`dump_json`."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
