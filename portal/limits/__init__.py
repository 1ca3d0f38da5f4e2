"""Per-key rate limits and per-user/organisation monthly budgets, enforced in Redis.

One Lua script (:data:`portal.limits.scripts.RESERVE`) checks and reserves everything a
request needs in one round trip, atomically across gateway processes and hosts: a
request from the key's requests-per-minute bucket, estimated tokens (prompt estimate +
``max_tokens``) from its tokens-per-minute bucket, a concurrency slot (a lease in a
sorted set, so a slot of a process that died frees itself), and the tokens and spend
from the monthly budgets of the user and of the billing organisation. After the answer,
:func:`settle` corrects reservations by what the engine really used and frees their
slots, many in one script call; the gateway pipelines it with the usage events' XADDs.

Buckets refill continuously (a token bucket of ``limit`` per minute). Budgets count per
UTC calendar month.
"""

from __future__ import annotations

import calendar
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from portal.errors import PlatformError
from portal.limits import leases, scripts
from portal.limits.wire import is_noscript, wire

__all__ = [
    "LimitsUnavailable",
    "QuotaExceeded",
    "RateLimited",
    "Reservation",
    "Settlement",
    "admit_leased",
    "reserve",
    "settle",
    "settle_command",
    "settlement",
]


class RateLimited(PlatformError):
    status = 429
    code = "rate_limit_exceeded"
    error_type = "requests"


class QuotaExceeded(PlatformError):
    status = 429
    code = "insufficient_quota"
    error_type = "insufficient_quota"


class LimitsUnavailable(PlatformError):
    status = 503
    code = "limits_unavailable"
    error_type = "server_error"


def limits_unavailable() -> LimitsUnavailable:
    return LimitsUnavailable(
        "Usage limits cannot be checked right now; try again shortly.",
        headers={"Retry-After": "5"},
    )


@dataclass(slots=True)
class Reservation:
    """What :func:`reserve` took, to be settled after the answer."""

    keys: list[str]  # rate buckets, in-flight set, user budget, org budget
    request_id: str
    tpm: int
    has_org: bool
    tokens: int
    spend_ucny: int
    headers: list[tuple[bytes, bytes]]
    lease: leases.Lease | None = None  # admitted by this process's lease of the key


def month(now: float | None = None) -> str:
    return time.strftime("%Y%m", time.gmtime(now))


def seconds_to_next_month(now: float | None = None) -> int:
    t = time.gmtime(now)
    days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
    left_today = 86_400 - (t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec)
    return (days - t.tm_mday) * 86_400 + left_today


def duration(ms: int) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_resets: dict[int, bytes] = {}


def _reset(ms: Any) -> bytes:
    """:func:`duration` of ``ms`` as a header value (remembered: a leased key's resets
    repeat the same few values)."""
    found = _resets.get(ms)
    if found is None:
        if len(_resets) >= 4096:
            _resets.clear()
        found = _resets[ms] = duration(int(ms)).encode()
    return found


def rate_headers(grant: Any, answer: list[Any]) -> list[tuple[bytes, bytes]]:
    """``x-ratelimit-*`` for the dimensions the key limits (unlimited ones are omitted)."""
    headers: list[tuple[bytes, bytes]] = []
    if grant.rpm:
        headers += (
            (b"x-ratelimit-limit-requests", b"%d" % grant.rpm),
            (b"x-ratelimit-remaining-requests", b"%d" % int(answer[1])),
            (b"x-ratelimit-reset-requests", _reset(answer[2])),
        )
    if grant.tpm:
        headers += (
            (b"x-ratelimit-limit-tokens", b"%d" % grant.tpm),
            (b"x-ratelimit-remaining-tokens", b"%d" % int(answer[3])),
            (b"x-ratelimit-reset-tokens", _reset(answer[4])),
        )
    return headers


def _budget(value: int | None) -> int:
    return -1 if value is None else value


_month = ("", 0, 0)  # a UTC month, its start and its end (unix seconds)
_keys: dict[tuple[int | None, int, int | None], list[str]] = {}


def limit_keys(grant: Any, now: float | None = None) -> list[str]:
    """``grant``'s rate buckets, in-flight set, and this month's user and org budgets
    (the month of ``now``, default the current time; the names are kept for reuse)."""
    global _month
    now = time.time() if now is None else now
    if not _month[1] <= now < _month[2]:
        t = time.gmtime(now)
        into = (t.tm_mday - 1) * 86_400 + t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec
        _month = (month(now), int(now) - into, int(now) + seconds_to_next_month(now))
        _keys.clear()
    ident = (grant.key_id, grant.user_id, grant.org_id)
    keys = _keys.get(ident)
    if keys is None:
        if len(_keys) >= 10_000:
            _keys.clear()
        keys = _keys[ident] = [
            *scripts.rate_keys(grant.bucket),
            scripts.budget_key("u", grant.user_id, _month[0]),
            scripts.budget_key("o", grant.org_id, _month[0]),
        ]
    return keys


def admit_leased(grant: Any, tokens: int) -> leases.Lease | None:
    """The lease of ``grant`` in this process if it admitted a request needing ``tokens``
    at once (the request then owes it ``lease.settle``), or None: then :func:`reserve`
    it (no waiting here, and no reservation object: the hot path; see
    :mod:`portal.limits.leases`; ``GATEWAY_LEASE_SHARE`` is read when a lease is made)."""
    lease = leases.leases().get(grant)
    return lease if lease is not None and lease.admit(tokens) else None


async def reserve(grant: Any, request_id: str, tokens: int, spend_ucny: int) -> Reservation:
    """Check and reserve one request of ``grant``; raise 429 (with headers) if refused.

    A key that may be leased is admitted against this process's lease (no round trip
    unless the lease must be taken or topped up first; see :mod:`portal.limits.leases`)."""
    has_org = grant.org_id is not None
    if settings.GATEWAY_LEASE_SHARE:
        lease = await leases.admit(grant, tokens)
        if lease is not None:  # settled by the lease, not in Redis: no keys
            headers = lease.rate_headers()
            return Reservation([], request_id, grant.tpm, False, tokens, 0, headers, lease)
    keys = limit_keys(grant)
    answer = await wire().evalsha(
        scripts.RESERVE,
        RESERVE_SHA,
        keys,
        [
            grant.rpm,
            grant.tpm,
            grant.max_concurrent,
            tokens,
            spend_ucny,
            _budget(grant.user_token_budget),
            _budget(grant.user_spend_budget_ucny),
            _budget(grant.org_token_budget) if has_org else -1,
            _budget(grant.org_spend_budget_ucny) if has_org else -1,
            request_id,
            settings.GATEWAY_CONCURRENCY_LEASE_S,
            int(has_org),
        ],
    )
    headers = rate_headers(grant, answer)
    verdict = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
    if verdict != "ok":
        raise refusal(verdict, grant, tokens, int(answer[5]), headers)
    return Reservation(
        keys,
        request_id,
        grant.tpm,
        has_org,
        tokens,
        spend_ucny,
        headers,
    )


_REFUSALS = {
    "concurrency": ("requests", "Too many concurrent requests for this API key ({limit})."),
    "requests": ("requests", "Rate limit reached: {limit} requests per minute for this API key."),
    "tokens": ("tokens", "Rate limit reached: {limit} tokens per minute for this API key."),
    "too_large": (
        "tokens",
        "Request too large: it may use {tokens} tokens, more than this API key's {limit} "
        "tokens per minute. Lower max_tokens or shorten the prompt.",
    ),
    "user_tokens": ("", "You have used your monthly token budget."),
    "user_spend": ("", "You have used your monthly spending budget."),
    "org_tokens": ("", "The organisation this key bills to has used its monthly token budget."),
    "org_spend": ("", "The organisation this key bills to has used its monthly spending budget."),
}


def refusal(
    verdict: str, grant: Any, tokens: int, retry_ms: int, headers: list[tuple[bytes, bytes]]
) -> PlatformError:
    kind, template = _REFUSALS[verdict]
    limit = {"concurrency": grant.max_concurrent, "requests": grant.rpm}.get(verdict, grant.tpm)
    message = template.format(limit=limit, tokens=tokens)
    extra = {k.decode(): v.decode() for k, v in headers}
    if not kind:
        retry = seconds_to_next_month()
        return QuotaExceeded(message, headers={"Retry-After": str(retry), **extra})
    retry = max(1, math.ceil(retry_ms / 1000))
    return RateLimited(message, error_type=kind, headers={"Retry-After": str(retry), **extra})


Settlement = tuple[Reservation, int, int]  # reservation, tokens used, micro-CNY spent


def settlement(reservation: Reservation, tokens_used: int, spent_ucny: int) -> Settlement | None:
    """What settles ``reservation`` in Redis, or None when its lease settled it here."""
    if reservation.lease is not None:
        reservation.lease.settle(reservation.tokens, tokens_used, spent_ucny)
        return None
    return reservation, tokens_used, spent_ucny


def settle_command(
    settlements: list[Settlement], stream: str, maxlen: int, entries: list[bytes]
) -> tuple[Any, ...]:
    """One script call that settles every reservation in ``settlements`` (in order):
    correct tokens and spend by what was really used, free the slots; then appends
    ``entries`` (batches of usage events) to ``stream``, trimmed to about ``maxlen``."""
    keys: list[str] = []
    args: list[Any] = [maxlen]
    for reservation, tokens_used, spend_used_ucny in settlements:
        keys += reservation.keys
        args += (
            reservation.tpm,
            reservation.request_id,
            tokens_used - reservation.tokens,
            spend_used_ucny - reservation.spend_ucny,
            int(reservation.has_org),
        )
    keys.append(stream)
    return ("EVALSHA", SETTLE_SHA, len(keys), *keys, *args, *entries)


async def settle(
    settlements: list[Settlement], stream: str, maxlen: int, entries: list[bytes]
) -> None:
    """:func:`settle_command` in one round trip, loading the script if Redis lacks it.

    Raises Redis' errors when Redis is unreachable."""
    if not settlements and not entries:
        return
    command = settle_command(settlements, stream, maxlen, entries)
    (reply,) = await wire().execute(command)
    if is_noscript(reply):
        await wire().execute(("SCRIPT", "LOAD", scripts.SETTLE), command)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


RESERVE_SHA = _sha(scripts.RESERVE)
SETTLE_SHA = _sha(scripts.SETTLE)
LEASE_SHA = _sha(scripts.LEASE)
