"""A tiny, safe ``where`` grammar for the viewer's filter, turned into parameterised SQL.

    where := cond (AND cond)*
    cond  := column op literal | column CONTAINS 'text' | column STARTSWITH 'text'
           | column IS [NOT] NULL
    op    := = | != | <> | < | <= | > | >=

Columns are bare words (Unicode letters, digits, ``_``) or ``"double quoted"``; literals
are ``'single quoted'`` strings (``''`` escapes a quote), numbers, ``true`` / ``false``.
Keywords are case-insensitive. Values only ever reach SQL as parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datasets.viewer.errors import ViewerError

MAX_WHERE_CHARS = 2000
MAX_PREDICATES = 16
COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
TEXT_OPS = ("contains", "startswith")
NULL_OPS = ("is null", "is not null")

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<ident>"(?:[^"]|"")+")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<word>[^\W\d]\w*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Predicate:
    """``column op value``; ``value`` is None for the null tests."""

    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _bad(message: str, param: str = "where") -> ViewerError:
    return ViewerError(message, code="invalid_where", param=param)


def _tokens(text: str) -> list[_Token]:
    tokens, pos, end = [], 0, len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise _bad(f"unexpected text at position {pos}: {text[pos : pos + 10]!r}")
        tokens.append(_Token(match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return tokens


def _number(text: str) -> int | float:
    """The literal as an int64 or a finite float: DuckDB parameters hold no more."""
    value: int | float = int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    fits = -(2**63) <= value < 2**63 if isinstance(value, int) else math.isfinite(value)
    if fits:
        return value
    raise _bad(f"the number {text[:30]} is out of range")


class _Parser:
    def __init__(self, tokens: list[_Token], columns: Mapping[str, str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.columns = columns

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise _bad(f"the condition ends early: expected {what}")
        self.pos += 1
        return token

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.lower() in words:
            self.pos += 1
            return token.text.lower()
        return None

    def column(self) -> str:
        token = self.take("a column name")
        if token.kind == "ident":
            name = token.text[1:-1].replace('""', '"')
        elif token.kind == "word":
            name = token.text
        else:
            raise _bad(f"expected a column name, got {token.text!r}")
        if name not in self.columns:
            raise _bad(f"unknown column {name!r}")
        return name

    def literal(self) -> Any:
        token = self.take("a value")
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "number":
            return _number(token.text)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        raise _bad(f"expected a value ('text', a number, true or false), got {token.text!r}")

    def condition(self) -> Predicate:
        name = self.column()
        if self.keyword("is"):
            negated = self.keyword("not") is not None
            if self.keyword("null") is None:
                raise _bad("expected NULL after IS")
            return Predicate(name, "is not null" if negated else "is null", None)
        word = self.keyword(*TEXT_OPS)
        if word is not None:
            return Predicate(name, word, self.literal())
        token = self.take("an operator")
        if token.kind != "op":
            raise _bad(f"expected an operator after {name!r}, got {token.text!r}")
        return Predicate(name, "!=" if token.text == "<>" else token.text, self.literal())

    def parse(self) -> list[Predicate]:
        predicates = [self.condition()]
        while self.peek() is not None:
            if self.keyword("and") is None:
                raise _bad(f"expected AND, got {self.take('AND').text!r}")
            predicates.append(self.condition())
            if len(predicates) > MAX_PREDICATES:
                raise _bad(f"at most {MAX_PREDICATES} conditions")
        return predicates


def _check_types(predicate: Predicate, kind: str) -> None:
    op, value = predicate.op, predicate.value
    if op in NULL_OPS:
        return
    if op in TEXT_OPS:
        ok = kind in ("string", "json") and isinstance(value, str)
    elif kind == "json":
        ok = False
    elif kind == "bool":
        ok = op in ("=", "!=") and isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise _bad(f"{predicate.column!r} ({kind}) cannot be compared with {op} {value!r}")


def parse_where(text: str, columns: Mapping[str, str]) -> list[Predicate]:
    """The predicates of ``text`` (joined by AND), checked against ``columns`` (name →
    kind: string, int64, float64, bool, json). Raises ViewerError (code ``invalid_where``,
    param ``where``) on anything else: unknown column, bad syntax, a value of the wrong
    type, text longer than MAX_WHERE_CHARS or more than MAX_PREDICATES conditions."""
    if len(text) > MAX_WHERE_CHARS:
        raise _bad(f"where is longer than {MAX_WHERE_CHARS} characters")
    tokens = _tokens(text)
    if not tokens:
        raise _bad("where is empty")
    predicates = _Parser(tokens, columns).parse()
    for predicate in predicates:
        _check_types(predicate, columns[predicate.column])
    return predicates


def quote(column: str) -> str:
    """``column`` as a SQL identifier (only ever called with names from the schema)."""
    return '"' + column.replace('"', '""') + '"'


def _sql(predicate: Predicate) -> tuple[str, list[Any]]:
    column = quote(predicate.column)
    if predicate.op == "is null":
        return f"{column} IS NULL", []
    if predicate.op == "is not null":
        return f"{column} IS NOT NULL", []
    if predicate.op == "contains":
        return f"contains(lower({column}), lower(?))", [predicate.value]
    if predicate.op == "startswith":
        return f"starts_with({column}, ?)", [predicate.value]
    return f"{column} {predicate.op} ?", [predicate.value]


def where_sql(predicates: list[Predicate]) -> tuple[str, list[Any]]:
    """A SQL condition for ``predicates`` and its parameters, in order."""
    parts, params = [], []
    for predicate in predicates:
        sql, values = _sql(predicate)
        parts.append(sql)
        params.extend(values)
    return " AND ".join(parts), params


def parse_orderby(text: str, columns: Mapping[str, str]) -> str:
    """``column [ASC|DESC]`` as a SQL ORDER BY term (nulls last); ViewerError (param
    ``orderby``) otherwise; JSON columns cannot be ordered."""
    try:
        parser = _Parser(_tokens(text), columns)
        name = parser.column()
        direction = parser.keyword("asc", "desc") or "asc"
    except ViewerError as error:
        raise _bad(error.message, "orderby") from None
    if parser.peek() is not None:
        raise _bad("orderby takes one column and ASC or DESC", "orderby")
    if columns[name] == "json":
        raise _bad(f"cannot order by the JSON column {name!r}", "orderby")
    return f"{quote(name)} {direction.upper()} NULLS LAST"
