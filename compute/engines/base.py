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
from typing import Any, Protocol, runtime_checkable


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


@runtime_checkable
class EngineAdapter(Protocol):
    """Builds the launch command of one engine kind."""

    name: str

    def build_command(self, spec: EngineSpec) -> list[str]:
        """The argv that starts the server described by ``spec``; raises EngineArgError."""
        ...

    def build_env(self, spec: EngineSpec) -> dict[str, str]:
        """Variables to add to the server's environment (may be empty)."""
        ...


class EngineArgError(ValueError):
    """An ``EngineSpec`` that the adapter cannot turn into a valid command line."""


@dataclass(frozen=True)
class Option:
    """One ``extra_args`` entry that maps straight onto a command-line flag.

    ``kind`` is the accepted Python type (``bool`` options are switches: the flag is
    emitted when true, nothing when false); ``check`` adds a constraint on the value,
    described by ``hint`` in error messages.
    """

    flag: str
    kind: type
    check: Callable[[Any], bool] | None = None
    hint: str = ""


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
    if ok and option.check is not None:
        ok = option.check(value)
    if not ok:
        expected = option.hint or kind.__name__
        raise EngineArgError(f"{engine} engine: {key}={value!r} is invalid; expected {expected}")
    return value


def render_options(
    engine: str, args: Mapping[str, object], options: Mapping[str, Option]
) -> list[str]:
    """Flags for the entries of ``args`` that ``options`` describes, in ``options`` order."""
    argv: list[str] = []
    for key, option in options.items():
        if key not in args:
            continue
        value = checked(engine, key, args[key], option)
        if option.kind is bool:
            argv += [option.flag] if value else []
        else:
            argv += [option.flag, str(value)]
    return argv
