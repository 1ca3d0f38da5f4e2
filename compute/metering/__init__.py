"""Usage metering: every ``/v1`` inference request becomes one usage record.

The gateway's hot path never writes to the database. It appends one
:class:`UsageEvent` to a Redis stream (:data:`STREAM`); a Celery worker reads the
stream in batches, writes ``UsageRecord`` rows and rolls them up per hour. An event is
acknowledged only after its row is committed, so nothing is lost when web or the
worker restarts in between.

The gateway appends the events of the requests that ended together as one stream
entry with one field, :data:`BATCH`: a JSON array of rows, each a JSON array of the
values named by :data:`ROW` (no field names: on the gateway's hot path a row costs a
tuple, and a batch one ``orjson.dumps``). A row carries the model's prices rather than
the cost, which the worker computes (:func:`request_cost`), so the gateway does no
decimal arithmetic per request. Entries that hold one event are read too: one field
:data:`PACKED` (the event as a JSON object, :meth:`UsageEvent.pack`), or one field per
attribute (:meth:`UsageEvent.encode`), as earlier gateways wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

import orjson

STREAM = "openmaas:usage"
PACKED = "e"
BATCH = "b"


@dataclass
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

    def pack(self) -> str:
        """A :data:`PACKED` entry's value: the event as a JSON object (the one-event
        format earlier gateways wrote; the gateway now publishes :data:`BATCH` rows)."""
        return orjson.dumps(vars(self)).decode()

    @classmethod
    def decode(cls, raw: dict[bytes | str, bytes | str]) -> UsageEvent:
        """The event of a stream entry that holds one; raises as :meth:`from_values`
        when it is malformed, or ValueError when it holds a batch of another size."""
        events = cls.decode_all(raw)
        if len(events) != 1:
            raise ValueError(f"the entry holds {len(events)} usage events, not one")
        return events[0]

    @classmethod
    def decode_all(cls, raw: dict[bytes | str, bytes | str]) -> list[UsageEvent]:
        """Every event of a stream entry; raises as :meth:`from_values` when the entry
        or one of its events is malformed."""
        events = []
        for values in unpack(raw):
            if isinstance(values, ValueError):
                raise values
            events.append(cls.from_values(values))
        return events

    @classmethod
    def from_values(cls, data: dict[str, object]) -> UsageEvent:
        """The event of one entry's or row's values (strings or JSON values, by field
        name); a row's prices become its cost. Raises ValueError, TypeError or
        ``decimal.InvalidOperation`` when a value is malformed."""
        values: dict[str, object] = {}
        for f in fields(cls):
            values[f.name] = _parse(str(f.type), data.get(f.name, ""))
        if "cost_cny" not in data:
            prices = data.get("price_input"), data.get("price_output")
            if prices != (None, None):
                if not all(isinstance(p, str) for p in prices):
                    raise TypeError(f"prices are not decimal strings: {prices!r}")
                values["cost_cny"] = str(
                    request_cost(
                        values["prompt_tokens"],  # type: ignore[arg-type]
                        values["completion_tokens"],  # type: ignore[arg-type]
                        Decimal(prices[0]),  # type: ignore[arg-type]
                        Decimal(prices[1]),  # type: ignore[arg-type]
                    )
                )
        return cls(**values)  # type: ignore[arg-type]


# The values of a row of a :data:`BATCH` entry, in order: an event's fields but its
# cost, then the model's prices (CNY per million prompt and completion tokens, as
# decimal strings; null for a request that reached no model, which costs nothing).
Row = tuple[Any, ...]
ROW: tuple[str, ...] = (
    *(f.name for f in fields(UsageEvent) if f.name != "cost_cny"),
    "price_input",
    "price_output",
)


def request_cost(
    prompt_tokens: int, completion_tokens: int, price_input: Decimal, price_output: Decimal
) -> Decimal:
    """The price of a request in CNY, from prices per million tokens (exact)."""
    return (prompt_tokens * price_input + completion_tokens * price_output) / 1_000_000


def pack_rows(rows: Iterable[Row]) -> bytes:
    """A :data:`BATCH` entry's value: the rows (in :data:`ROW` order) as one JSON array."""
    return orjson.dumps(list(rows))


def unpack(raw: dict[bytes | str, bytes | str]) -> list[dict[str, object] | ValueError]:
    """The values of each event a stream entry holds, by field name (strings or JSON
    values; see :meth:`UsageEvent.from_values`), or for a row of the wrong shape the
    error, so that the entry's other rows can still be read. Raises ValueError or
    TypeError when the entry is malformed as a whole."""
    data: dict[str, object] = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    if len(data) == 1 and BATCH in data:
        rows = json.loads(str(data[BATCH]))
        if not isinstance(rows, list):
            raise TypeError("a batch of usage events is not a JSON array")
        return [_row_values(row) for row in rows]
    if len(data) == 1 and PACKED in data:
        data = json.loads(str(data[PACKED]))
        if not isinstance(data, dict):
            raise TypeError("a packed usage event is not a JSON object")
    return [data]


def _row_values(row: object) -> dict[str, object] | ValueError:
    """One row's values by name, or what is wrong with it."""
    if isinstance(row, list) and len(row) == len(ROW):
        return dict(zip(ROW, row, strict=True))
    return ValueError(f"not a usage row of {len(ROW)} values: {str(row)[:100]}")


def _parse(type_name: str, value: object) -> object:
    """A field's value from its stream text (or, packed, its JSON value)."""
    if type_name.endswith("| None") and value in ("", None):
        return None
    if isinstance(value, (dict, list)):
        raise TypeError(f"not a {type_name}: {value!r}")
    if type_name.startswith("int"):
        return int(value or 0)  # type: ignore[call-overload]
    if type_name.startswith("float"):
        return float(value or 0)  # type: ignore[arg-type]
    if type_name == "bool":
        return value in ("1", "True", "true", True, 1)
    return "" if value is None else str(value)
