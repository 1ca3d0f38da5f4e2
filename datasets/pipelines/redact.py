"""PII redaction: every string leaf of a row (lists and objects included) rewritten."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from datasets.pipelines.base import PipelineError, Row, Step
from datasets.pipelines.pii import KINDS, redact

DEFAULT_REPLACEMENTS = {
    "id_card": "[身份证号]",
    "mobile": "[手机号]",
    "email": "[邮箱]",
    "bank_card": "[银行卡号]",
}


@dataclass(frozen=True)
class RedactPiiParams:
    kinds: tuple[str, ...] = KINDS
    fields: tuple[str, ...] | None = None
    replacements: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in self.kinds:
            if kind not in KINDS:
                raise PipelineError(
                    f"Unknown kind {kind!r} (known: {', '.join(KINDS)}).", param="kinds"
                )
        for kind in self.replacements:
            if kind not in KINDS:
                raise PipelineError(
                    f"Unknown kind {kind!r} (known: {', '.join(KINDS)}).", param="replacements"
                )


class RedactPii(Step[RedactPiiParams]):
    """Replaces checked resident IDs, mobile numbers, e-mails and bank cards with a token
    per kind (``replacements`` overrides :data:`DEFAULT_REPLACEMENTS`); keys of objects
    are structure and left alone. Rows are never removed."""

    name = "redact_pii"
    Params = RedactPiiParams

    def __init__(self, params: RedactPiiParams) -> None:
        super().__init__(params)
        self.tokens = {**DEFAULT_REPLACEMENTS, **params.replacements}
        self.by_kind: Counter[str] = Counter()
        self.rows_redacted = 0

    def apply(self, rows: Iterator[Row]) -> Iterator[Row]:
        fields = self.params.fields
        for row in rows:
            before = self.by_kind.total()
            if fields is None:
                data = self._scrub(row.data)
            else:
                data = {k: self._scrub(v) if k in fields else v for k, v in row.data.items()}
            if self.by_kind.total() != before:
                self.rows_redacted += 1
                row = row._replace(data=data)
            yield row

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            text, matches = redact(value, self.tokens, self.params.kinds)
            self.by_kind.update(match.kind for match in matches)
            return text
        if isinstance(value, dict):
            return {key: self._scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        return value

    def counters(self) -> dict[str, Any]:
        return {
            "rows_redacted": self.rows_redacted,
            "redacted": {k: self.by_kind[k] for k in self.params.kinds},
        }
