"""What validation found: problems with their line, field and reason, and the report
that carries the first of them plus a count of every problem by reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FORMATS = (
    "chat",
    "prompt_completion",
    "preference",
    "text",
    "multiple_choice",
    "alpaca",
    "sharegpt",
    "tabular",
)
CONTAINERS = ("jsonl", "csv", "parquet")

# Reason codes are shown to users and stored with versions: never rename one.
REASONS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "empty_value",
    "invalid_role",
    "no_assistant_message",
    "not_ending_with_assistant",
    "invalid_weight",
    "invalid_tool_call",
    "invalid_answer",
    "forbidden_token",
    "invalid_utf8",
    "bom",
    "line_too_long",
    "too_many_tokens",
    "empty_file",
    "binary_file",
    "unknown_format",
    "unexpected_format",
    "inconsistent_format",
    "invalid_csv",
    "invalid_parquet",
    "truncated",
)

MAX_LISTED = 100


class ValidationCancelled(Exception):
    """Raised by `validate_file` when its ``should_stop`` callback answers true."""


@dataclass
class Problem:
    """One problem: ``line`` is 1-based (0 = the whole file), ``field`` a path such as
    ``messages[2].role`` (empty when the whole row or file is at fault)."""

    line: int
    field: str
    reason: str
    message: str


@dataclass
class ValidationReport:
    container: str
    format: str | None
    rows: int = 0
    valid_rows: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_counts: dict[str, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """No problems, at least one row and a known format."""
        return not self.problem_counts and self.rows > 0 and self.format is not None

    @property
    def problem_total(self) -> int:
        return sum(self.problem_counts.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``valid`` included for readers that do not recompute it)."""
        data = asdict(self)
        data["valid"] = self.valid
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """The inverse of `to_dict`; unknown keys are ignored."""
        return cls(
            container=data["container"],
            format=data.get("format"),
            rows=data.get("rows", 0),
            valid_rows=data.get("valid_rows", 0),
            bytes=data.get("bytes", 0),
            problems=[Problem(**p) for p in data.get("problems", [])],
            problem_counts=dict(data.get("problem_counts", {})),
            columns=list(data.get("columns", [])),
        )


class ProblemLog:
    """Collects problems into a report: lists the first `MAX_LISTED`, counts them all."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report

    def add(self, line: int, field: str, reason: str, message: str) -> None:
        counts = self.report.problem_counts
        counts[reason] = counts.get(reason, 0) + 1
        if len(self.report.problems) < MAX_LISTED:
            self.report.problems.append(Problem(line, field, reason, message))
