"""API keys: create (shown once), list, revoke, and resolve a presented key.

The gateway resolves keys on its hot path through a half-second per-process memo, then
Redis (a 30-second cache of the key's grant), then PostgreSQL. Three rules keep the
cache honest (Redis names in :mod:`portal.limits.scripts`):

- revocation writes a tombstone before and after its commit, and the cache fill is a
  Lua script that refuses to cache a tombstoned key, so a fill that read the key before
  the revocation committed cannot revive it;
- a change of a user's memberships, budgets or account bumps the user's generation and
  drops the user's cached grants; a fill whose roles were read before the bump is not
  cached;
- failed look-ups are cached (``-``) and counted per client address; past
  ``GATEWAY_AUTH_FAILURES_PER_MINUTE`` the address gets 429 before any database query,
  and database look-ups run on a small dedicated thread pool, never on the thread that
  route refresh uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from portal.errors import AuthenticationFailed, NotFound, PlatformError
from portal.limits import scripts
from portal.models import APIKey, Membership, Organization, Principal, UserBudget
from portal.models.keys import (
    KEY_PREFIX,
    SCOPES,
    VISIBLE_CHARS,
    generate_key,
    hash_key,
)

logger = logging.getLogger(__name__)

CACHE_TTL_S = 30
CACHE_PREFIX = scripts.GRANT_PREFIX
TOMBSTONE_TTL_S = 86_400
# A per-process memo in front of Redis: one Redis look-up per key per half second.
LOCAL_TTL_S = 0.5
LOCAL_MAX_ENTRIES = 10_000
_local_grants: dict[str, tuple[KeyGrant | None, float]] = {}
_executor: ThreadPoolExecutor | None = None


@dataclass(frozen=True)
class KeyGrant:
    """What a valid key (or a signed-in browser session) grants.

    Limits are resolved: ``rpm``/``tpm``/``max_concurrent`` hold the key's own value or
    the platform default, 0 meaning unlimited. Budgets are per UTC month, None meaning
    unlimited; spend budgets are in micro-CNY (1e-6 CNY). ``org_id`` is the organisation
    the key bills to (its user is a member), else None.
    """

    key_id: int | None
    user_id: int
    is_superuser: bool
    org_roles: dict[int, str]
    expires_at: float | None
    scopes: tuple[str, ...] = SCOPES
    allowed_models: tuple[str, ...] = ()
    rpm: int = 0
    tpm: int = 0
    max_concurrent: int = 0
    org_id: int | None = None
    user_token_budget: int | None = None
    user_spend_budget_ucny: int | None = None
    org_token_budget: int | None = None
    org_spend_budget_ucny: int | None = None
    generation: str = field(default="0", compare=False)

    @property
    def principal(self) -> Principal:
        return Principal(self.user_id, self.is_superuser, self.org_roles)

    @property
    def bucket(self) -> str:
        """The name of this grant's rate buckets: per key, or per user for a session."""
        return f"k{self.key_id}" if self.key_id is not None else f"u{self.user_id}"

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str | bytes) -> KeyGrant:
        data = json.loads(raw)
        data["org_roles"] = {int(k): v for k, v in data["org_roles"].items()}
        data["scopes"] = tuple(data["scopes"])
        data["allowed_models"] = tuple(data["allowed_models"])
        return cls(**data)


def _ucny(amount: Decimal | None) -> int | None:
    return None if amount is None else int(amount * 1_000_000)


def _limit(own: int | None, default: int) -> int:
    return default if own is None else own


# --- creating and revoking ------------------------------------------------------------


def billing_org(user: Any, name: str | None) -> Organization | None:
    """The organisation named ``name`` if ``user`` belongs to it; else a 400."""
    if not name:
        return None
    org = Organization.objects.filter(name=name, memberships__user=user).first()
    if org is None:
        raise PlatformError(
            f"You are not a member of an organisation named '{name}'.",
            code="invalid_organization",
            param="organization",
        )
    return org


def create_api_key(
    user: Any,
    name: str = "",
    expires_at: datetime | None = None,
    *,
    scopes: list[str] | None = None,
    allowed_models: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    max_concurrent: int | None = None,
    organization: str | None = None,
) -> tuple[APIKey, str]:
    """Create a key for ``user``; return it and the raw secret, which is never stored."""
    raw = generate_key()
    key = APIKey.objects.create(
        user=user,
        name=name[:100],
        prefix=raw[: len(KEY_PREFIX) + VISIBLE_CHARS],
        key_hash=hash_key(raw),
        expires_at=expires_at,
        scopes=list(SCOPES) if scopes is None else sorted(set(scopes)),
        allowed_models=sorted(set(allowed_models or [])),
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        max_concurrent=max_concurrent,
        organization=billing_org(user, organization),
    )
    return key, raw


def revoke_api_key(actor: Any, key_id: int) -> APIKey:
    """Revoke one of ``actor``'s keys (another user's key is a 404)."""
    with transaction.atomic():
        key = APIKey.objects.select_for_update().filter(pk=key_id, user=actor).first()
        if key is None:
            raise NotFound("No such API key.")
        key_hash = key.key_hash
        # Before the commit: a gateway that read the key as active cannot cache it now.
        tombstone(key_hash)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
    tombstone(key_hash)
    return key


def tombstone(key_hash: str) -> None:
    """Mark a key revoked in Redis and drop its cached grant (all processes, this memo).

    With Redis unreachable the revocation still commits: the cache is unreachable too.
    """
    _local_grants.pop(key_hash, None)
    try:
        pipe = sync_redis().pipeline(transaction=True)
        pipe.set(scripts.TOMBSTONE_PREFIX + key_hash, "1", ex=TOMBSTONE_TTL_S)
        pipe.delete(CACHE_PREFIX + key_hash)
        pipe.execute()
    except RedisError:
        logger.warning("Redis unreachable: could not tombstone a revoked key")


def forget_key(key_hash: str) -> None:
    """Drop a key's cached grant: from Redis (all processes) and from this process."""
    _local_grants.pop(key_hash, None)
    try:
        sync_redis().delete(CACHE_PREFIX + key_hash)
    except RedisError:
        logger.warning("Redis unreachable: could not drop a cached key grant")


def invalidate_user_grants(user_id: int) -> None:
    """After a change to a user's memberships, budgets or account: every gateway
    process re-reads that user's grants within :data:`LOCAL_TTL_S`."""
    for key_hash, (grant, _) in list(_local_grants.items()):
        if grant is not None and grant.user_id == user_id:
            _local_grants.pop(key_hash, None)
    try:
        sync_redis().eval(
            scripts.INVALIDATE_USER,
            2,
            scripts.GENERATION_PREFIX + str(user_id),
            scripts.USER_INDEX_PREFIX + str(user_id),
            CACHE_PREFIX,
        )
    except RedisError:
        logger.warning("Redis unreachable: could not drop the cached grants of a user")


def connect_invalidation() -> None:
    """Drop cached grants whenever what they were built from changes, by any path
    (services, admin, cascades): memberships, budgets, users and keys."""
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete, post_save

    def user_changed(user_id: int) -> None:
        transaction.on_commit(lambda: invalidate_user_grants(user_id))

    def on_membership(instance: Membership, **_: Any) -> None:
        user_changed(instance.user_id)

    def on_user_budget(instance: UserBudget, **_: Any) -> None:
        user_changed(instance.user_id)

    def on_user(instance: Any, **_: Any) -> None:
        user_changed(instance.pk)

    def on_org(instance: Organization, **_: Any) -> None:
        for user_id in Membership.objects.filter(organization=instance).values_list(
            "user_id", flat=True
        ):
            user_changed(user_id)

    def on_key(instance: APIKey, **_: Any) -> None:
        key_hash = instance.key_hash
        transaction.on_commit(lambda: forget_key(key_hash))

    for model, receiver in (
        (Membership, on_membership),
        (UserBudget, on_user_budget),
        (get_user_model(), on_user),
        (Organization, on_org),
    ):
        post_save.connect(receiver, sender=model, weak=False, dispatch_uid=f"grants-{model}")
        post_delete.connect(receiver, sender=model, weak=False, dispatch_uid=f"grants-d-{model}")
    post_save.connect(on_key, sender=APIKey, weak=False, dispatch_uid="grants-key")
    post_delete.connect(on_key, sender=APIKey, weak=False, dispatch_uid="grants-key-delete")


# --- reading grants -------------------------------------------------------------------


def plausible_key(raw: str) -> bool:
    """Cheap shape check before any hashing or lookup."""
    return raw.startswith(KEY_PREFIX) and len(raw) <= 200


def lookup_key(raw: str) -> APIKey | None:
    """The active key for a presented secret, or None. Synchronous (DRF, admin)."""
    if not plausible_key(raw):
        return None
    return APIKey.objects.active().select_related("user").filter(key_hash=hash_key(raw)).first()


def _budgets(model: Any) -> tuple[int | None, int | None]:
    if model is None:
        return None, None
    return model.monthly_token_budget, _ucny(model.monthly_spend_budget_cny)


def _user_grant(user: Any, key: APIKey | None, generation: str) -> KeyGrant | None:
    """The grant of ``user`` acting through ``key`` (or a browser session: None)."""
    if not user.is_active:
        return None
    principal = Principal.of(user)
    org = key.organization if key is not None else None
    if org is not None and org.pk not in principal.org_roles:
        return None  # the key bills to an organisation its user has left
    user_tokens, user_spend = _budgets(UserBudget.objects.filter(user=user).first())
    org_tokens, org_spend = _budgets(org)
    return KeyGrant(
        key_id=key.pk if key else None,
        user_id=user.pk,
        is_superuser=user.is_superuser,
        org_roles=principal.org_roles,
        expires_at=key.expires_at.timestamp() if key and key.expires_at else None,
        scopes=tuple(key.scopes) if key else ("inference",),
        allowed_models=tuple(key.allowed_models) if key else (),
        rpm=_limit(key.rpm_limit if key else None, settings.KEY_DEFAULT_RPM),
        tpm=_limit(key.tpm_limit if key else None, settings.KEY_DEFAULT_TPM),
        max_concurrent=_limit(
            key.max_concurrent if key else None, settings.KEY_DEFAULT_MAX_CONCURRENT
        ),
        org_id=org.pk if org else None,
        user_token_budget=user_tokens,
        user_spend_budget_ucny=user_spend,
        org_token_budget=org_tokens,
        org_spend_budget_ucny=org_spend,
        generation=generation,
    )


def grant_for(key: APIKey, generation: str = "0") -> KeyGrant | None:
    return _user_grant(key.user, key, generation)


def session_grant(user: Any) -> KeyGrant:
    """The grant of a signed-in browser session (the playground): inference on any model
    the user may read, the platform's default key limits, the user's own budgets. Its
    rate buckets are the user's (``u<user id>``), shared by all the user's sessions."""
    grant = _user_grant(user, None, "0")
    if grant is None:
        raise AuthenticationFailed("This account is disabled.", code="account_disabled")
    return grant


def touch_key(key: APIKey) -> None:
    """Record use, at most once a minute per key (no write on every request)."""
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        APIKey.objects.filter(pk=key.pk).update(last_used_at=now)


def _generation(user_id: int) -> str | None:
    """The user's grant generation, read before their roles; None if Redis is down."""
    try:
        raw = sync_redis().get(scripts.GENERATION_PREFIX + str(user_id))
    except Exception:
        return None
    return "0" if raw is None else raw.decode()


def read_grant(raw: str) -> KeyGrant | None:
    """A key's grant from the database; the user's generation is read before the roles."""
    key = (
        APIKey.objects.active()
        .select_related("user", "organization")
        .filter(key_hash=hash_key(raw))
        .first()
    )
    if key is None:
        return None
    touch_key(key)
    return grant_for(key, _generation(key.user_id) or "-")


def resolve_grant_sync(raw: str) -> KeyGrant | None:
    """For the gateway's look-up threads, outside any request: manages its connection."""
    close_old_connections()
    try:
        return read_grant(raw)
    finally:
        close_old_connections()


class Throttled(PlatformError):
    status = 429
    code = "too_many_failed_authentications"
    error_type = "rate_limit_error"


def _throttled() -> Throttled:
    return Throttled(
        "Too many failed authentications from your address; try again in a minute.",
        headers={"Retry-After": "60"},
    )


async def _lookup_in_db(raw: str) -> KeyGrant | None:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(settings.GATEWAY_AUTH_THREADS, "openmaas-auth")
    return await asyncio.get_running_loop().run_in_executor(_executor, resolve_grant_sync, raw)


_auth_scripts: dict[int, tuple[Any, Any]] = {}


def _scripts(redis: Any) -> tuple[Any, Any]:
    pair = _auth_scripts.get(id(redis))
    if pair is None:
        pair = (
            redis.register_script(scripts.AUTH_LOOKUP),
            redis.register_script(scripts.FILL_GRANT),
        )
        _auth_scripts[id(redis)] = pair
    return pair


async def _shared_grant(raw: str, key_hash: str, client: str) -> KeyGrant | None:
    from portal.redis import async_redis

    redis = async_redis()
    lookup, fill = _scripts(redis)
    cache_key = CACHE_PREFIX + key_hash
    fail_key = scripts.AUTH_FAIL_PREFIX + client
    cached = await lookup(
        keys=[cache_key, fail_key], args=[settings.GATEWAY_AUTH_FAILURES_PER_MINUTE]
    )
    if cached == b"T":
        raise _throttled()
    if cached is not None:
        return None if cached == b"-" else KeyGrant.loads(cached)
    grant = await _lookup_in_db(raw)
    return await fill_grant(redis, fill, key_hash, grant, client)


async def fill_grant(
    redis: Any, fill: Any, key_hash: str, grant: KeyGrant | None, client: str
) -> KeyGrant | None:
    """Cache a grant read from the database unless its key was revoked meanwhile
    (then None) or its user's grants changed meanwhile (then it is served, uncached)."""
    user = str(grant.user_id) if grant else "0"
    outcome = await fill(
        keys=[
            CACHE_PREFIX + key_hash,
            scripts.TOMBSTONE_PREFIX + key_hash,
            scripts.GENERATION_PREFIX + user,
            scripts.USER_INDEX_PREFIX + user,
            scripts.AUTH_FAIL_PREFIX + client,
        ],
        args=[
            grant.dumps() if grant else "-",
            CACHE_TTL_S,
            grant.generation if grant else "",
            key_hash,
        ],
    )
    return None if outcome == 0 else grant


async def check_auth_failures(client: str) -> None:
    """Raise :class:`Throttled` when ``client`` is past the failed-authentication limit
    (for credentials other than keys, e.g. a browser session, before any look-up)."""
    from portal.redis import async_redis

    fails = await async_redis().get(scripts.AUTH_FAIL_PREFIX + client)
    if int(fails or 0) >= settings.GATEWAY_AUTH_FAILURES_PER_MINUTE:
        raise _throttled()


async def note_auth_failure(client: str) -> None:
    """Count one failed authentication of ``client`` (the window is one minute)."""
    from portal.redis import async_redis

    key = scripts.AUTH_FAIL_PREFIX + client
    redis = async_redis()
    if await redis.incr(key) == 1:  # the window starts with the first failure
        await redis.expire(key, 60)


async def resolve_grant(raw: str, client: str = "-") -> KeyGrant | None:
    """The grant of a presented key: from this process's half-second memo, else Redis,
    else the database. Revocation clears Redis at once, so other processes see it
    within :data:`LOCAL_TTL_S`. ``client`` is the caller's address (failure throttle).

    Raises :class:`Throttled` past the failure limit, and Redis' own errors when Redis
    is unreachable (the gateway decides what that means).
    """
    if not plausible_key(raw):
        return None
    key_hash = hash_key(raw)
    memo = _local_grants.get(key_hash)
    if memo is not None and memo[1] > time.monotonic():
        return _unexpired(memo[0])
    # Requests that miss the memo together (it just ran out, under load) share one
    # look-up, in a task of its own so that a caller hanging up does not cancel it.
    ident = (key_hash, client)
    lookup = _lookups.get(ident)
    if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():
        lookup = _lookups[ident] = asyncio.ensure_future(_remembered(raw, key_hash, client))
        lookup.add_done_callback(lambda done: _forget_lookup(ident, done))
    return _unexpired(await asyncio.shield(lookup))


_lookups: dict[tuple[str, str], asyncio.Future[KeyGrant | None]] = {}


async def _remembered(raw: str, key_hash: str, client: str) -> KeyGrant | None:
    grant = await _shared_grant(raw, key_hash, client)
    if len(_local_grants) >= LOCAL_MAX_ENTRIES:
        _local_grants.clear()
    _local_grants[key_hash] = (grant, time.monotonic() + LOCAL_TTL_S)
    return grant


def _forget_lookup(ident: tuple[str, str], done: asyncio.Future[KeyGrant | None]) -> None:
    if _lookups.get(ident) is done:
        del _lookups[ident]
    if not done.cancelled():
        done.exception()  # retrieved: the callers that still wait get it themselves


async def resolve_grant_uncached(raw: str) -> KeyGrant | None:
    """Straight from the database (Redis unreachable and GATEWAY_REDIS_FAILURE=open)."""
    if not plausible_key(raw):
        return None
    return _unexpired(await _lookup_in_db(raw))


def _unexpired(grant: KeyGrant | None) -> KeyGrant | None:
    if grant is not None and grant.expires_at is not None and grant.expires_at <= time.time():
        return None
    return grant


_sync_client: Any = None


def sync_redis() -> Any:
    """One thread-safe synchronous client per process (web requests, signals)."""
    global _sync_client
    if _sync_client is None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=1.0,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        )
    return _sync_client
