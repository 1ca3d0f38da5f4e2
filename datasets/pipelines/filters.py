"""Row filters: by length, by language, by regular expression."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import regex

from datasets.pipelines.base import PipelineError, Row, Step, param
from datasets.text import LANGUAGES, language_of, text_of

MAX_PATTERN = 500
#: Seconds one pattern may spend on one row before the run fails (catastrophic backtracking).
MATCH_TIMEOUT = 1.0


def _text(row: Row, field: str | None) -> str:
    """The text of the whole row, or of one top-level field ("" when absent)."""
    return text_of(row.data if field is None else row.data.get(field, ""))


class _Filter(Step[Any]):
    def apply(self, rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            if self.keeps(row):
                yield row
            else:
                self.drop(row)

    def keeps(self, row: Row) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class FilterLengthParams:
    min_chars: int | None = param(None, min=0)
    max_chars: int | None = param(None, min=0)
    field: str | None = None

    def __post_init__(self) -> None:
        if self.min_chars is None and self.max_chars is None:
            raise PipelineError("Give min_chars, max_chars or both.", param="min_chars")
        if None not in (self.min_chars, self.max_chars) and self.min_chars > self.max_chars:  # type: ignore[operator]
            raise PipelineError("min_chars is above max_chars.", param="min_chars")


class FilterLength(_Filter):
    """Keeps rows whose text (or ``field``'s) has between min and max characters, inclusive."""

    name = "filter_length"
    Params = FilterLengthParams

    def keeps(self, row: Row) -> bool:
        size, p = len(_text(row, self.params.field)), self.params
        return (p.min_chars is None or size >= p.min_chars) and (
            p.max_chars is None or size <= p.max_chars
        )


@dataclass(frozen=True)
class FilterLanguageParams:
    languages: tuple[str, ...]
    field: str | None = None

    def __post_init__(self) -> None:
        for language in self.languages:
            if language not in LANGUAGES:
                raise PipelineError(
                    f"Unknown language {language!r} (known: {', '.join(LANGUAGES)}).",
                    param="languages",
                )


class FilterLanguage(_Filter):
    """Keeps rows whose text (or ``field``'s) is in one of ``languages``, as
    :func:`datasets.text.language_of` decides."""

    name = "filter_language"
    Params = FilterLanguageParams

    def keeps(self, row: Row) -> bool:
        return language_of(_text(row, self.params.field)) in self.params.languages


@dataclass(frozen=True)
class FilterRegexParams:
    pattern: str
    field: str | None = None
    action: Literal["keep", "drop"] = "drop"
    ignore_case: bool = False

    def __post_init__(self) -> None:
        compile_pattern(self.pattern, self.ignore_case)


def compile_pattern(pattern: str, ignore_case: bool) -> regex.Pattern[str]:
    """The compiled pattern; :class:`PipelineError` (``param="pattern"``) when it is
    empty, longer than :data:`MAX_PATTERN` characters or does not compile."""
    if not pattern or len(pattern) > MAX_PATTERN:
        raise PipelineError(
            f"The pattern must have 1 to {MAX_PATTERN} characters.", param="pattern"
        )
    try:
        return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
    except regex.error as exc:
        raise PipelineError(f"The pattern does not compile: {exc}.", param="pattern") from exc


class FilterRegex(_Filter):
    """With ``action="drop"`` drops rows whose text (or ``field``'s) matches ``pattern``
    anywhere; with ``"keep"`` keeps only those. The ``regex`` engine bounds each search
    to :data:`MATCH_TIMEOUT` seconds; a pattern that exceeds it fails the run with a
    :class:`PipelineError` rather than stalling the worker."""

    name = "filter_regex"
    Params = FilterRegexParams

    def __init__(self, params: FilterRegexParams) -> None:
        super().__init__(params)
        self.compiled = compile_pattern(params.pattern, params.ignore_case)

    def keeps(self, row: Row) -> bool:
        try:
            found = self.compiled.search(_text(row, self.params.field), timeout=MATCH_TIMEOUT)
        except TimeoutError as exc:
            message = f"The pattern took over {MATCH_TIMEOUT:g} s on line {row.line}; simplify it."
            raise self.fail(message, "pattern") from exc
        return (found is not None) == (self.params.action == "keep")
