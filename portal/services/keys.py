"""API keys: create (shown once), list, revoke, and resolve a presented key.

The gateway resolves keys on its hot path through Redis: the principal a key maps to
is cached under its hash for a short time and dropped from the cache on revocation.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from portal.errors import NotFound
from portal.models import APIKey, Principal
from portal.models.keys import KEY_PREFIX, VISIBLE_CHARS, generate_key, hash_key

CACHE_TTL_S = 30
CACHE_PREFIX = "openmaas:apikey:"
# A per-process memo in front of Redis: one Redis round trip per key per second.
LOCAL_TTL_S = 1.0
LOCAL_MAX_ENTRIES = 10_000
_local_grants: dict[str, tuple[KeyGrant | None, float]] = {}


@dataclass(frozen=True)
class KeyGrant:
    """What a valid key grants: the key id and the principal it acts as."""

    key_id: int
    user_id: int
    is_superuser: bool
    org_roles: dict[int, str]
    expires_at: float | None

    @property
    def principal(self) -> Principal:
        return Principal(self.user_id, self.is_superuser, self.org_roles)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str | bytes) -> KeyGrant:
        data = json.loads(raw)
        data["org_roles"] = {int(k): v for k, v in data["org_roles"].items()}
        return cls(**data)


def create_api_key(
    user: Any, name: str = "", expires_at: datetime | None = None
) -> tuple[APIKey, str]:
    """Create a key for ``user``; return it and the raw secret, which is never stored."""
    raw = generate_key()
    key = APIKey.objects.create(
        user=user,
        name=name[:100],
        prefix=raw[: len(KEY_PREFIX) + VISIBLE_CHARS],
        key_hash=hash_key(raw),
        expires_at=expires_at,
    )
    return key, raw


def revoke_api_key(actor: Any, key_id: int) -> APIKey:
    """Revoke one of ``actor``'s keys (another user's key is a 404)."""
    with transaction.atomic():
        key = APIKey.objects.select_for_update().filter(pk=key_id, user=actor).first()
        if key is None:
            raise NotFound("No such API key.")
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
        key_hash = key.key_hash
    transaction.on_commit(lambda: forget_key(key_hash))
    return key


def forget_key(key_hash: str) -> None:
    """Drop a key's cached grant: from Redis (all processes) and from this process."""
    _local_grants.pop(key_hash, None)
    _redis().delete(CACHE_PREFIX + key_hash)


def plausible_key(raw: str) -> bool:
    """Cheap shape check before any hashing or lookup."""
    return raw.startswith(KEY_PREFIX) and len(raw) <= 200


def lookup_key(raw: str) -> APIKey | None:
    """The active key for a presented secret, or None. Synchronous (DRF, admin)."""
    if not plausible_key(raw):
        return None
    return APIKey.objects.active().select_related("user").filter(key_hash=hash_key(raw)).first()


def grant_for(key: APIKey) -> KeyGrant | None:
    user = key.user
    if not user.is_active:
        return None
    principal = Principal.of(user)
    expires = key.expires_at.timestamp() if key.expires_at else None
    return KeyGrant(key.pk, user.pk, user.is_superuser, principal.org_roles, expires)


def touch_key(key: APIKey) -> None:
    """Record use, at most once a minute per key (no write on every request)."""
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        APIKey.objects.filter(pk=key.pk).update(last_used_at=now)


def resolve_grant_sync(raw: str) -> KeyGrant | None:
    """For the gateway's worker thread, outside any request: it manages its connection."""
    close_old_connections()
    try:
        key = lookup_key(raw)
        if key is None:
            return None
        touch_key(key)
        return grant_for(key)
    finally:
        close_old_connections()


async def _shared_grant(raw: str, key_hash: str) -> KeyGrant | None:
    from asgiref.sync import sync_to_async

    from portal.redis import async_redis

    cache_key = CACHE_PREFIX + key_hash
    redis = async_redis()
    cached = await redis.get(cache_key)
    if cached is not None:
        return None if cached == b"-" else KeyGrant.loads(cached)
    grant = await sync_to_async(resolve_grant_sync)(raw)
    await redis.set(cache_key, grant.dumps() if grant else "-", ex=CACHE_TTL_S)
    return grant


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


async def resolve_grant(raw: str) -> KeyGrant | None:
    """The grant of a presented key: from this process's one-second memo, else Redis,
    else the database. Revocation clears Redis at once, so other processes see it
    within :data:`LOCAL_TTL_S`."""
    if not plausible_key(raw):
        return None
    key_hash = hash_key(raw)
    memo = _local_grants.get(key_hash)
    if memo is not None and memo[1] > time.monotonic():
        grant = memo[0]
    else:
        grant = await _shared_grant(raw, key_hash)
        if len(_local_grants) >= LOCAL_MAX_ENTRIES:
            _local_grants.clear()
        _local_grants[key_hash] = (grant, time.monotonic() + LOCAL_TTL_S)
    expired = (
        grant is not None
        and grant.expires_at is not None
        and (grant.expires_at <= timezone.now().timestamp())
    )
    return None if expired else grant
