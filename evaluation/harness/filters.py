"""Answer filters: what turns a model's raw output into the answer that metrics compare.

A task's ``filters`` run in order on a list of candidate strings, starting from
``[output]``; the first candidate left at the end is the extracted answer. ``regex``
yields every match (so ``take_first``/``take_last`` pick one), ``number`` the first or
last number. User patterns run on the third-party ``regex`` module with a timeout,
since the stdlib ``re`` has none.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import regex

from portal.plugins import Registry

REGEX_TIMEOUT_S = 0.5
INVALID = "[invalid]"  # lm-eval's fallback when nothing matches


@dataclass(frozen=True)
class Option:
    """One option a plug-in accepts: its allowed types, default and whether it is required."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False


class Plugin:
    """A filter or metric configured from its YAML entry (``{name: ..., **options}``).

    ``options`` declares what the entry may hold; :func:`evaluation.harness.spec` checks
    names and types, then constructs the plug-in, whose ``__init__`` may raise
    ``ValueError`` for a value that is well-typed but wrong (a pattern that does not compile).
    """

    options: ClassVar[Mapping[str, Option]] = {}

    def __init__(self, **given: Any) -> None:
        self.opts: dict[str, Any] = {
            key: given.get(key, option.default) for key, option in self.options.items()
        }


class Filter(Plugin):
    """Maps candidate answers to candidate answers."""

    def apply(self, values: list[str]) -> list[str]:
        raise NotImplementedError


FILTERS: Registry[Filter] = Registry("filter", Filter)


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """``pattern`` compiled, or ``ValueError`` saying why it does not compile."""
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc


def run_filters(filters: list[Filter], output: str) -> str:
    """The answer extracted from ``output`` by ``filters`` (the output itself when none)."""
    values = [output]
    for step in filters:
        values = step.apply(values)
    return values[0] if values else ""


@FILTERS.register("regex")
class RegexFilter(Filter):
    """Every match of ``pattern``, or ``[fallback]`` when no candidate matches.

    A match yields its capture ``group`` when one is given, else — as lm-eval's regex
    filter — its first non-empty group (the whole match for a pattern without groups).
    ``select`` keeps one match by position (lm-eval's ``group_select``: 0, -1, …).
    """

    options = {
        "pattern": Option((str,), required=True),
        "group": Option((int,)),
        "select": Option((int,)),
        "fallback": Option((str,), INVALID),
    }

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self.pattern = compile_pattern(self.opts["pattern"])
        group = self.opts["group"]
        if group is not None and not 0 <= group <= self.pattern.groups:
            raise ValueError(f"group {group}: the pattern has {self.pattern.groups} groups")

    def apply(self, values: list[str]) -> list[str]:
        found = [m for value in values for m in self._matches(value)]
        select = self.opts["select"]
        if select is not None and found:
            found = [found[select]] if -len(found) <= select < len(found) else []
        return found or [self.opts["fallback"]]

    def _matches(self, value: str) -> list[str]:
        try:
            return [self._text(m) for m in self.pattern.finditer(value, timeout=REGEX_TIMEOUT_S)]
        except TimeoutError:
            return []

    def _text(self, match: regex.Match[str]) -> str:
        group = self.opts["group"]
        if group is not None:
            return match.group(group) or ""
        groups = [g for g in match.groups() if g]
        return groups[0] if groups else ("" if self.pattern.groups else match.group(0))


@FILTERS.register("take_first")
class TakeFirst(Filter):
    def apply(self, values: list[str]) -> list[str]:
        return values[:1]


@FILTERS.register("take_last")
class TakeLast(Filter):
    def apply(self, values: list[str]) -> list[str]:
        return values[-1:]


@FILTERS.register("strip")
class Strip(Filter):
    options = {"chars": Option((str,))}

    def apply(self, values: list[str]) -> list[str]:
        return [value.strip(self.opts["chars"]) for value in values]


@FILTERS.register("lowercase")
class Lowercase(Filter):
    def apply(self, values: list[str]) -> list[str]:
        return [value.lower() for value in values]


@FILTERS.register("remove_whitespace")
class RemoveWhitespace(Filter):
    """Leading whitespace removed (lm-eval's ``remove_whitespace``); ``all``: every space."""

    options = {"all": Option((bool,), False)}

    def apply(self, values: list[str]) -> list[str]:
        if self.opts["all"]:
            return ["".join(value.split()) for value in values]
        return [value.lstrip() for value in values]


# A sign, digits with optional thousands separators, an optional decimal part.
_NUMBER = regex.compile(r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−]?\.\d+")


def normalise_digits(text: str) -> str:
    """Full-width digits, signs and separators (１２，３４５．６) as ASCII (NFKC)."""
    return unicodedata.normalize("NFKC", text).replace("−", "-")


def extract_numbers(text: str) -> list[str]:
    """Every number in ``text``, thousands separators removed: ``"1,234.5"`` → ``"1234.5"``."""
    return [m.replace(",", "") for m in _NUMBER.findall(normalise_digits(text))]


@FILTERS.register("number")
class NumberFilter(Filter):
    """The ``last`` (default, GSM8K style) or ``first`` number of each candidate."""

    options = {"which": Option((str,), "last"), "fallback": Option((str,), INVALID)}

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        if self.opts["which"] not in ("first", "last"):
            raise ValueError("which: must be 'first' or 'last'")

    def apply(self, values: list[str]) -> list[str]:
        out = []
        for value in values:
            numbers = extract_numbers(value)
            index = 0 if self.opts["which"] == "first" else -1
            out.append(numbers[index] if numbers else self.opts["fallback"])
        return out
