"""Fine-tunes spend the same monthly token budgets as inference (:mod:`portal.limits`):
the user's own and, when the request bills to one, its organisation's. Admission reserves
the estimated trained tokens in the same Redis counters the gateway uses, atomically
checking both budgets; the job's end corrects the reservation by what it really trained.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from django.conf import settings

from portal.limits import QuotaExceeded, month, seconds_to_next_month
from portal.limits.scripts import budget_key
from portal.models import Organization, UserBudget

# KEYS: user budget, org budget. ARGV: tokens, user budget, org budget (-1: none),
# 1 when there is an organisation (its counter is charged even without a budget).
# Returns 0 when reserved, 1 when the user's budget is short, 2 the organisation's.
RESERVE = """
local tokens = tonumber(ARGV[1])
for i = 1, 2 do
  local limit = tonumber(ARGV[i + 1])
  if limit >= 0 and tonumber(redis.call('HGET', KEYS[i], 'tok') or '0') + tokens > limit then
    return i
  end
end
for i = 1, 1 + tonumber(ARGV[4]) do
  redis.call('HINCRBY', KEYS[i], 'tok', tokens)
end
return 0
"""


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def _limit(model: Any) -> int:
    value = getattr(model, "monthly_token_budget", None)
    return -1 if value is None else int(value)


def reserve(user: Any, org_id: int | None, tokens: int) -> dict[str, Any]:
    """Take ``tokens`` from this month's budgets of ``user`` and org ``org_id``; returns
    the reservation to store on the job. Raises QuotaExceeded (429) when either budget
    has less left."""
    now_month = month()
    org = Organization.objects.filter(pk=org_id).first() if org_id else None
    keys = [budget_key("u", user.pk, now_month), budget_key("o", org_id, now_month)]
    limits = [_limit(UserBudget.objects.filter(user=user).first()), _limit(org)]
    verdict = int(client().eval(RESERVE, 2, *keys, tokens, *limits, int(org is not None)))  # type: ignore[arg-type]
    if verdict:
        whose = "your" if verdict == 1 else "the billing organisation's"
        raise QuotaExceeded(
            f"This fine-tune would train about {tokens} tokens, more than {whose} monthly "
            "token budget has left.",
            code="quota_exceeded",
            headers={"Retry-After": str(seconds_to_next_month())},
        )
    return {"tokens": tokens, "keys": keys if org is not None else keys[:1]}


def settle(reservation: dict[str, Any], used: int) -> None:
    """Correct a reservation to ``used`` tokens (0 refunds it all); idempotent per job
    because the caller clears the stored reservation."""
    delta = int(used) - int(reservation.get("tokens", 0))
    if not delta:
        return
    pipe = client().pipeline()
    for key in reservation.get("keys", []):
        pipe.hincrby(key, "tok", delta)
    pipe.execute()
