"""Usage metering: every ``/v1`` inference request becomes one usage record.

The gateway's hot path never writes to the database. It appends one
:class:`UsageEvent` to a Redis stream (:data:`STREAM`); a Celery worker reads the
stream in batches, writes ``UsageRecord`` rows and rolls them up per hour. An event is
acknowledged only after its row is committed, so nothing is lost when web or the
worker restarts in between.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

STREAM = "openmaas:usage"


@dataclass(frozen=True)
class UsageEvent:
    """One inference request as the gateway saw it (tokens as the engine counted them)."""

    request_id: str
    ts: float  # unix seconds when the request arrived
    key_id: int | None
    user_id: int
    org_id: int | None  # the organisation the key bills to, if any
    model: str  # the served name the client asked for
    model_version_id: int | None
    replica_id: int | None
    node_id: int | None
    endpoint: str  # "chat" or "completion"
    stream: bool
    status: int  # HTTP status returned to the client
    error_code: str  # "" on success
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None  # streams only: time to the first content chunk
    cost_cny: str  # decimal string, price at request time

    def encode(self) -> dict[str, str]:
        """The stream entry's fields (Redis stores strings; None becomes "")."""
        return {
            k: "" if v is None else str(int(v) if isinstance(v, bool) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def decode(cls, raw: dict[bytes | str, bytes | str]) -> UsageEvent:
        data = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        values: dict[str, object] = {}
        for f in fields(cls):
            text = data.get(f.name, "")
            values[f.name] = _parse(str(f.type), text)
        return cls(**values)  # type: ignore[arg-type]


def _parse(type_name: str, text: str) -> object:
    if type_name.endswith("| None") and text == "":
        return None
    if type_name.startswith("int"):
        return int(text or 0)
    if type_name.startswith("float"):
        return float(text or 0)
    if type_name == "bool":
        return text in ("1", "True", "true")
    return text
