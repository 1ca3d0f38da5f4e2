"""Leases: a gateway process takes a slice of a busy key's limits from Redis at once.

Asking Redis about every request costs the request a round trip before it can go
upstream (on a small machine about half of the gateway's own latency). For a key whose
per-minute limits are large next to one request that is wasted: the answer is always
yes. Such a key gets a **lease** instead, in one script call (:data:`scripts.LEASE`):
``1/GATEWAY_LEASE_SHARE`` of its requests-per-minute and tokens-per-minute buckets (by
default a tenth of a second's worth) and a few of its concurrency slots. The process then
admits the key's requests against the lease locally, settles them locally (a request's
unused tokens go back to the lease, its slot is free at once), tops the lease up in the
background when half of it is used and once every ``GATEWAY_LEASE_S`` while the key is
busy (which also adds the usage to the monthly counters), and hands back what is left
once the key has been quiet for ``GATEWAY_LEASE_S``, or when the process stops.

Slots follow demand: a lease holds a quarter more than the most requests it had in flight
since the last top-up (at least 2, at most an eighth of the key's concurrency and
:data:`MAX_SLOTS`), grows at once when a request finds them all busy (while Redis has
room) and shrinks at the next top-up. They are members of the key's in-flight set with
a short expiry (:func:`slot_ttl_s`) that every top-up refreshes, also while a closing
lease's last requests run, so the slots of a process that died or cannot reach Redis
free themselves within seconds.

Limits still hold across processes and hosts: a lease is taken from the shared buckets
and slots, so what all processes admit together never exceeds a limit. The price is
precision near a limit: capacity one process holds is not available to another until it
is handed back (at most a share of the limit, for at most about ``GATEWAY_LEASE_S``). So
only keys that can afford it are leased (:func:`terms`): requests per minute unlimited or
at least ``GATEWAY_LEASE_SHARE × GATEWAY_LEASE_MIN_REQUESTS``; tokens per minute unlimited
or a lease's share enough for that many requests of ``GATEWAY_DEFAULT_MAX_TOKENS``;
concurrency unlimited or at least 16; and no monthly budget (budgets are checked per
request). A request the lease cannot cover even after a top-up (more tokens than a lease
holds, all its slots busy while Redis has no more), and, once a top-up was refused (a
bucket ran short), every request beyond what the lease still holds until the next tick,
goes to Redis on its own, exactly as without leases, and gets the exact verdict and
headers. The ``x-ratelimit-remaining-*``
headers of a leased request count what Redis had left at the last top-up plus what the
lease still holds.

When Redis cannot be reached, a top-up fails and the lease stops admitting; the key's
requests then meet the unreachable Redis on their own (``GATEWAY_REDIS_FAILURE``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from portal.limits import scripts
from portal.limits.wire import wire
from portal.loops import PerLoop

logger = logging.getLogger(__name__)
MAX_SLOTS = 128  # concurrency slots one lease may hold
SLOT_SHARE = 8  # ... and at most this fraction of a key's concurrency (1/8)


@dataclass(frozen=True, slots=True)
class Terms:
    """What one lease of a key holds when full: requests, tokens and concurrency slots
    (0: that limit is off, nothing to hold)."""

    requests: int
    tokens: int
    slots: int


def terms(grant: Any) -> Terms | None:
    """The lease ``grant`` may have, or None when its requests go to Redis one by one."""
    share = settings.GATEWAY_LEASE_SHARE
    if not share:
        return None
    budgets = [grant.user_token_budget, grant.user_spend_budget_ucny]
    if grant.org_id is not None:
        budgets += [grant.org_token_budget, grant.org_spend_budget_ucny]
    if any(b is not None for b in budgets):
        return None
    least = settings.GATEWAY_LEASE_MIN_REQUESTS
    requests, tokens = grant.rpm // share, grant.tpm // share
    if grant.rpm and requests < least:
        return None
    if grant.tpm and tokens < least * settings.GATEWAY_DEFAULT_MAX_TOKENS:
        return None
    slots = min(grant.max_concurrent // SLOT_SHARE, MAX_SLOTS)
    if grant.max_concurrent and slots < 2:
        return None
    return Terms(requests, tokens, slots)


ACTIVE, CLOSING, CLOSED = "active", "closing", "closed"
MIN_SLOTS = 2
HEADER_STEP_CAP = 100_000


def slot_ttl_s() -> float:
    """How long a lease's slots live in Redis unless refreshed (every tick refreshes
    them): those of a process that died or stalled free themselves this soon."""
    return 3 * settings.GATEWAY_LEASE_S + 1


class Lease:
    """One key's lease in this process (see the module's text)."""

    def __init__(self, grant: Any, lease_terms: Terms, leases: Leases) -> None:
        self.grant = grant
        self.terms = lease_terms
        self.leases = leases
        self.id = uuid.uuid4().hex[:16]
        self.born = time.monotonic()
        self.state = ACTIVE
        self.held = False  # the first take succeeded
        # What the lease holds now (None: that limit is off).
        self.requests: int | None = 0 if grant.rpm else None
        self.tokens: int | None = 0 if grant.tpm else None
        # Concurrency slots held (in Redis), and how many requests may use them now:
        # while a call that may shrink them is under way, the smaller of the two.
        self.slots = 0
        self.slot_cap = 0
        self.slots_short = False  # Redis had no room for more, until the next tick
        self.exhausted = False  # a top-up was refused (a bucket is short), until the next tick
        self.inflight = 0
        self.peak = 0  # most requests in flight (or wanting a slot) since the last tick
        # Usage not yet added to the monthly counters.
        self.used_tokens = 0
        self.spent_ucny = 0
        # Redis' bucket levels at the last call, for the rate headers.
        self.redis_requests = 0
        self.redis_tokens = 0
        self.busy = False  # admitted a request since the last tick
        self.cached_headers: list[tuple[bytes, bytes]] = []
        self.cached_head = b""  # the same as the end of a head (see rate_head)
        self.headers_left = 0  # admissions until the headers are recomputed
        self.syncing: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # --- admitting and settling requests (local, no waiting) -------------------------

    def admit(self, tokens: int) -> bool:
        """Take one request and ``tokens`` from the lease if it holds them (every
        request of a leased key passes here: locals, no calls)."""
        if self.state != ACTIVE or not self.held:
            return False
        requests, left = self.requests, self.tokens
        if requests is not None and requests < 1:
            return False
        if left is not None and left < tokens:
            return False
        inflight = self.inflight
        if inflight >= self.slot_cap and self.terms.slots:
            self.peak = max(self.peak, inflight + 1)
            return False
        if requests is not None:
            self.requests = requests = requests - 1
        if left is not None:
            self.tokens = left = left - tokens
        self.inflight = inflight = inflight + 1
        if inflight > self.peak:
            self.peak = inflight
        self.busy = True
        if self.syncing is None and not self.exhausted:
            terms_ = self.terms
            if (requests is not None and requests * 2 < terms_.requests) or (
                left is not None and left * 2 < terms_.tokens
            ):
                self.sync()  # half of it is used: top it up
        return True

    def can_grow(self, tokens: int) -> bool:
        """Whether a top-up could let a request of ``tokens`` in."""
        if self.state != ACTIVE or self.exhausted:
            return False
        full = self.terms.slots and self.inflight >= self.slot_cap
        if full and self.held and (self.slots >= self.terms.slots or self.slots_short):
            return False  # no more slots to be had until the next tick
        return self.tokens is None or tokens <= self.terms.tokens

    def settle(self, reserved: int, used: int, spent_ucny: int) -> None:
        """A request admitted by this lease ended, having used ``used`` tokens."""
        self.inflight -= 1
        if self.tokens is not None:
            self.tokens += reserved - used
        self.used_tokens += used
        self.spent_ucny += spent_ucny
        if self.state == CLOSING and self.inflight == 0:
            self._release_soon()

    def rate_headers(self) -> list[tuple[bytes, bytes]]:
        """The ``x-ratelimit-*`` headers of a request it admits. Recomputed after every
        top-up and after every n admissions, n a hundredth of the lease's requests or
        tokens (the smaller; at most 1,000): exact for a small lease, behind by at most n
        requests for a large one (whose lease is itself a small share of the limit), at a
        fraction of the cost per request."""
        self.headers_left -= 1
        if self.headers_left < 0:
            self._render_headers()
        return self.cached_headers

    def rate_head(self) -> bytes:
        """The same headers as the end of an answer's head: header lines, each ending in
        CRLF, then the blank line's CRLF (for ``portal.gateway.server``), rendered with
        them."""
        self.rate_headers()
        return self.cached_head

    def _render_headers(self) -> None:
        from portal.limits import rate_headers

        self.cached_headers = rate_headers(self.grant, self.headers())
        lines = [b"%b: %b\r\n" % pair for pair in self.cached_headers]
        self.cached_head = b"".join([*lines, b"\r\n"])
        terms_ = self.terms
        step = min(terms_.requests or HEADER_STEP_CAP, terms_.tokens or HEADER_STEP_CAP)
        self.headers_left = min(step, HEADER_STEP_CAP) // 100

    def headers(self) -> list[Any]:
        """RESERVE's answer shape for :func:`portal.limits.rate_headers`."""
        grant = self.grant
        requests = self.redis_requests + (self.requests or 0)
        tokens = self.redis_tokens + (self.tokens or 0)
        return [b"ok", requests, _full_ms(requests, grant.rpm), tokens, _full_ms(tokens, grant.tpm)]

    def _wanted_slots(self) -> int:
        """Slots for the most requests in flight lately, plus a quarter, within terms."""
        peak = max(self.peak, self.inflight)
        return min(self.terms.slots, max(MIN_SLOTS, peak + peak // 4 + 1))

    # --- talking to Redis -------------------------------------------------------------

    def sync(self) -> asyncio.Future[None]:
        """Top the lease up (one call; one at a time): its future. A lease that is
        closing only refreshes the slots its requests still use."""
        if self.syncing is None:
            self.syncing = asyncio.ensure_future(self._call(release=False))
            self.syncing.add_done_callback(_quiet)
        return self.syncing

    async def _call(self, *, release: bool) -> None:
        from portal.limits import LEASE_SHA, limit_keys

        grant, terms_ = self.grant, self.terms
        taking = not release and self.state == ACTIVE
        take_requests = take_tokens = 0
        if taking and self.requests is not None:
            take_requests = terms_.requests - self.requests
        if taking and self.tokens is not None:
            take_tokens = terms_.tokens - self.tokens
        back_requests = (self.requests or 0) if release else 0
        back_tokens = (self.tokens or 0) if release else 0
        if release:
            slots = 0
        elif taking:
            slots = self._wanted_slots()
            self.peak = self.inflight
        else:
            slots = max(self.inflight, 0)
        self.slot_cap = min(self.slots, slots)
        used, spent = self.used_tokens, self.spent_ucny
        self.used_tokens = self.spent_ucny = 0  # a failed call loses them (never twice)
        try:
            answer = await wire().evalsha(
                scripts.LEASE,
                LEASE_SHA,
                limit_keys(grant),
                [
                    grant.rpm,
                    grant.tpm,
                    grant.max_concurrent,
                    self.id,
                    slots,
                    max(take_requests, 0),
                    max(take_tokens, 0),
                    back_requests,
                    back_tokens,
                    used,
                    spent,
                    int(grant.org_id is not None),
                    self.slots,
                    slot_ttl_s(),
                ],
            )
        except RedisError:
            if not release:
                logger.warning("Redis unreachable: the lease of %s stops admitting", grant.bucket)
                self._close()
            raise
        finally:
            if not release:
                self.syncing = None
        self.redis_requests, self.redis_tokens = int(answer[1]), int(answer[3])
        self.headers_left = 0
        self.slots = self.slot_cap = int(answer[5])
        if release:
            return
        self.slots_short = self.slots < slots
        verdict = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
        self.held = True
        if self.timer is None and self.state != CLOSED:
            self._tick_later()
        if verdict != "ok":
            # A bucket is short: admit what the lease still holds, send the rest to Redis
            # one by one (exact verdicts), and try again at the next tick.
            self.exhausted = True
            return
        if self.requests is not None:
            self.requests += max(take_requests, 0)
        if self.tokens is not None:
            self.tokens += max(take_tokens, 0)

    def _close(self, *, exact: bool = True) -> None:
        """Admit nothing more; hand the rest back once the requests in flight ended
        (refreshing their slots until then). With ``exact`` (a top-up failed), the key's
        requests go to Redis one by one for the next ``GATEWAY_LEASE_S``."""
        if self.state != ACTIVE:
            return
        self.state = CLOSING
        self.leases.drop(self, exact_for_s=settings.GATEWAY_LEASE_S if exact else 0.0)
        if self.inflight == 0:
            self._release_soon()

    def _release_soon(self) -> None:
        self.state = CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.leases.track(asyncio.ensure_future(self.release()))

    async def release(self) -> None:
        """Hand back what the lease holds and its slots (after any top-up in flight).
        If Redis cannot be reached, the slots expire on their own (:func:`slot_ttl_s`)
        and the requests and tokens refill with the buckets."""
        if self.syncing is not None:
            await asyncio.gather(self.syncing, return_exceptions=True)
        if not self.held:
            return
        try:
            await self._call(release=True)
        except RedisError:
            bucket = self.grant.bucket
            logger.warning("Redis unreachable: the lease of %s was not handed back", bucket)

    def _tick_later(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(settings.GATEWAY_LEASE_S, self._tick)

    def _tick(self) -> None:
        """Every ``GATEWAY_LEASE_S``: a busy lease tops up (reporting its usage and
        fitting its slots to its recent peak), a quiet one is handed back, a closing one
        refreshes the slots its requests still use."""
        self.timer = None
        if self.state == CLOSED:
            return
        if self.state == ACTIVE and not self.busy and self.inflight == 0:
            self.leases.drop(self)
            self._release_soon()
            return
        self.busy = False
        self.exhausted = False
        self.sync()
        self._tick_later()


def _quiet(future: asyncio.Future[None]) -> None:
    """A background top-up's failure was logged already."""
    if not future.cancelled():
        future.exception()


def _full_ms(level: int, cap: int) -> int:
    if cap <= 0:
        return 0
    return math.ceil(max(0, cap - level) * 60_000 / cap)


class Leases:
    """This event loop's leases, by key bucket."""

    def __init__(self) -> None:
        self.by_bucket: dict[str, Lease] = {}
        self.exact_until: dict[str, float] = {}
        # Grants (cached objects, replaced when re-read) found not leasable, by id.
        self.unleasable: dict[int, Any] = {}
        self.last: Lease | None = None  # the lease get() returned last
        self.pending: set[asyncio.Future[Any]] = set()

    def get(self, grant: Any) -> Lease | None:
        """The key's lease (made if needed), or None when its requests go to Redis one
        by one (it may not be leased, or its last top-up failed)."""
        last = self.last
        if last is not None and last.grant is grant and last.state == ACTIVE:
            return last  # the key of the previous request, most often
        if self.unleasable.get(id(grant)) is grant:
            return None
        bucket = grant.bucket
        lease = self.by_bucket.get(bucket)
        if lease is not None:
            if lease.grant is grant:
                self.last = lease
                return lease
            if lease.grant == grant:  # the same grant, read again
                lease.grant = grant
                self.last = lease
                return lease
            if time.monotonic() - lease.born < settings.GATEWAY_LEASE_S:
                return None  # requests with the key's old and new grants overlap
            lease._close(exact=False)  # the key's limits changed: a lease under the new ones
        lease_terms = terms(grant)
        if lease_terms is None:
            if len(self.unleasable) >= 10_000:
                self.unleasable.clear()
            self.unleasable[id(grant)] = grant
            return None
        if self.exact_until:
            until = self.exact_until.get(bucket)
            if until is not None:
                if time.monotonic() < until:
                    return None
                del self.exact_until[bucket]
        lease = self.by_bucket[bucket] = self.last = Lease(grant, lease_terms, self)
        return lease

    def drop(self, lease: Lease, exact_for_s: float = 0.0) -> None:
        bucket = lease.grant.bucket
        if self.by_bucket.get(bucket) is lease:
            del self.by_bucket[bucket]
        if exact_for_s:
            if len(self.exact_until) >= 10_000:
                self.exact_until.clear()
            self.exact_until[bucket] = time.monotonic() + exact_for_s

    def track(self, future: asyncio.Future[Any]) -> None:
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    async def release_all(self) -> None:
        """Hand every lease back (the process is stopping)."""
        for lease in list(self.by_bucket.values()):
            self.drop(lease)
            if lease.state == ACTIVE:
                lease._release_soon()
        while self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)


leases = PerLoop(Leases)


async def admit(grant: Any, tokens: int) -> Lease | None:
    """The lease that admitted a request of ``grant`` needing ``tokens``, or None when it
    must go to Redis on its own. Raises Redis' errors when a top-up cannot reach it."""
    lease = leases().get(grant)
    if lease is None:
        return None
    for _ in range(2):
        if lease.admit(tokens):
            return lease
        if not lease.can_grow(tokens):
            return None
        await asyncio.shield(lease.sync())
    return lease if lease.admit(tokens) else None


async def release_all() -> None:
    found = leases.existing()
    if found is not None:
        await found.release_all()
