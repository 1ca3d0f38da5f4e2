"""What every engine adapter shares: the launch spec, the adapter interface, option checks.

An adapter turns an :class:`EngineSpec` into the command line (and extra environment) that
starts an OpenAI-compatible server for one model replica. Adapters never import the engine
itself, so building a command works on machines where the engine is not installed.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to launch one model server.

    ``extra_args`` holds engine options by name (``max_model_len``, ``dtype``,
    ``tensor_parallel_size``, ``enable_lora``...); a ``None`` value means "not set". Each
    adapter documents the names it accepts and rejects any other name.
    """

    model_dir: str
    served_model_name: str
    host: str
    port: int
    extra_args: Mapping[str, object] = field(default_factory=dict)
    python: str = sys.executable
    # The replica's secret: the engine serves /v1 only to callers presenting it. It goes to
    # the engine through the environment (``build_env``), never argv (``ps`` shows argv).
    api_key: str = ""
    # The deployment's watermark secret (engines with ``watermark`` on): environment only.
    watermark_key: str = ""


@runtime_checkable
class EngineAdapter(Protocol):
    """Builds the launch command of one engine kind."""

    name: str
    # Every ``extra_args`` name the engine accepts, with its type, range and allowed values.
    schema: Mapping[str, Option]

    def build_command(self, spec: EngineSpec) -> list[str]:
        """The argv that starts the server described by ``spec``; raises EngineArgError."""
        ...

    def build_env(self, spec: EngineSpec) -> dict[str, str]:
        """Variables to add to the server's environment (may be empty)."""
        ...


class EngineArgError(ValueError):
    """An ``EngineSpec`` that the adapter cannot turn into a valid command line."""


Access = Literal["open", "trusted", "reserved"]


@dataclass(frozen=True)
class Option:
    """One ``extra_args`` entry: its type and constraints (the engine's argument schema)
    and, when it maps straight onto a command-line flag, that flag.

    ``kind`` is the accepted Python type (``bool`` options are switches: the flag is
    emitted when true, nothing when false); ``minimum``/``maximum`` bound numbers,
    ``choices`` lists the allowed values, ``check`` adds any other constraint, and ``hint``
    describes the constraint in error messages. ``access`` says who may set it through the
    portal: anyone deploying (``open``), only on a model version an admin marked trusted
    (``trusted``), or only the platform itself (``reserved``).
    """

    flag: str
    kind: type
    check: Callable[[Any], bool] | None = None
    hint: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[object, ...] | None = None
    access: Access = "open"

    def accepts(self, value: object) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        if self.minimum is not None and value < self.minimum:  # type: ignore[operator]
            return False
        if self.maximum is not None and value > self.maximum:  # type: ignore[operator]
            return False
        return self.check is None or self.check(value)

    def describe(self) -> dict[str, object]:
        """The entry as plain data (for documentation and the API)."""
        entry: dict[str, object] = {"type": self.kind.__name__, "access": self.access}
        for key in ("minimum", "maximum", "choices", "hint"):
            value = getattr(self, key)
            if value not in (None, ""):
                entry[key] = list(value) if key == "choices" else value
        return entry


def describe_schema(schema: Mapping[str, Option]) -> dict[str, dict[str, object]]:
    return {name: option.describe() for name, option in schema.items()}


def validate_args(adapter: EngineAdapter, args: Mapping[str, object]) -> None:
    """Raise EngineArgError unless ``args`` would start ``adapter``'s engine: the command
    builder is the one place that knows every rule (types, ranges, combinations)."""
    spec = EngineSpec(
        "/model",
        "validation",
        "127.0.0.1",
        8000,
        args,
        api_key="validation",
        watermark_key="validation",
    )
    adapter.build_command(spec)
    adapter.build_env(spec)


def positive(value: Any) -> bool:
    return value > 0


def closest(name: str, choices: Iterable[str]) -> str:
    """A ``" Did you mean 'x'?"`` hint, or an empty string when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def check_spec(engine: str, spec: EngineSpec, known: Iterable[str]) -> dict[str, object]:
    """Validate the common fields; return the set (non-``None``) extra args.

    Unknown option names are rejected with a did-you-mean hint: a typo must not silently
    launch a server with default settings.
    """
    if not spec.model_dir:
        raise EngineArgError(f"{engine} engine: model_dir is empty")
    if not spec.served_model_name:
        raise EngineArgError(f"{engine} engine: served_model_name is empty")
    if isinstance(spec.port, bool) or not isinstance(spec.port, int) or not 0 < spec.port < 65536:
        raise EngineArgError(f"{engine} engine: port must be in 1..65535, got {spec.port!r}")
    if not spec.api_key:
        raise EngineArgError(f"{engine} engine: no API key; an engine never serves without one")
    allowed = set(known)
    for key in spec.extra_args:
        if key not in allowed:
            raise EngineArgError(
                f"{engine} engine: unknown option {key!r}.{closest(key, allowed)} "
                f"Known options: {', '.join(sorted(allowed))}."
            )
    return {k: v for k, v in spec.extra_args.items() if v is not None}


def checked(engine: str, key: str, value: object, option: Option) -> Any:
    """Return ``value`` if it has the option's type (bools are not numbers) and constraint."""
    kind = option.kind
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(float(value))  # type: ignore[arg-type]
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if ok:
        ok = option.accepts(value)
    if not ok:
        expected = option.hint or _hint(option)
        raise EngineArgError(f"{engine} engine: {key}={value!r} is invalid; expected {expected}")
    return value


def _hint(option: Option) -> str:
    if option.choices is not None:
        return "one of " + ", ".join(map(str, option.choices))
    if option.minimum is not None or option.maximum is not None:
        low = "" if option.minimum is None else f"{option.minimum} <= "
        high = "" if option.maximum is None else f" <= {option.maximum}"
        return f"{low}{option.kind.__name__}{high}"
    return option.kind.__name__


def render_options(
    engine: str, args: Mapping[str, object], options: Mapping[str, Option]
) -> list[str]:
    """Flags for the entries of ``args`` that ``options`` describes, in ``options`` order."""
    argv: list[str] = []
    for key, option in options.items():
        if key not in args:
            continue
        value = checked(engine, key, args[key], option)
        if not option.flag:
            continue  # rendered by the adapter itself
        if option.kind is bool:
            argv += [option.flag] if value else []
        else:
            argv += [option.flag, str(value)]
    return argv
