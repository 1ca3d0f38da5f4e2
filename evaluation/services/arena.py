"""The arena: anonymous side-by-side battles between served models, one vote each, and
Bradley-Terry ratings of the votes.

A battle draws two distinct contenders at random (seeded by the battle's id, so a
battle's draw can be replayed) and asks both the user's prompt through the gateway
(``EVAL_GATEWAY_URL``, chat completions) as the user: a key of their own, made for the
battle, limited to the two models, short-lived and revoked once both answered. Usage
is the user's, the gateway applies their limits, and a contender they may not read
is refused there. Which model answered as A or B is kept from the voter until they
vote (the API hides it; see :func:`revealed`); only the battle's user votes, once.

Starting battles is rate limited per user by the platform's Redis limiter
(:data:`portal.limits.scripts.RESERVE`, a continuous token bucket of
``EVAL_ARENA_BATTLES_PER_MINUTE``), atomically across web processes. Ratings
(:mod:`evaluation.services.ratings`) are recomputed on the first read after new votes
and cached on the arena with the number of votes they counted.
"""

from __future__ import annotations

import logging
import math
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from evaluation.models import Arena, Battle, Winner
from evaluation.services import ratings
from evaluation.services.leaderboards import create_owned, resolve_model
from portal.errors import Conflict, NotFound, PlatformError
from portal.limits import RateLimited, limits_unavailable, scripts
from portal.models.ownership import Visibility

logger = logging.getLogger(__name__)

MAX_CONTENDERS = 32
MAX_PROMPT_CHARS = 8000
# Defaults of the settings (``EVAL_ARENA_*``) when they are not set.
BATTLES_PER_MINUTE = 10
MAX_TOKENS = 256
TIMEOUT_S = 120.0
TEMPERATURE = 0.7
KEY_TTL = timedelta(minutes=15)


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def create_arena(
    user: Any,
    owner: Any,
    name: Any,
    contenders: Any,
    *,
    title: str = "",
    description: str = "",
    visibility: str = Visibility.PUBLIC,
) -> Arena:
    """An arena of ``contenders``: 2 to 32 distinct model names ``user`` may read (404
    for another), stored as the gateway serves them. Errors as
    :func:`~evaluation.services.leaderboards.create_owned`."""
    names = _contenders(user, contenders)
    arena = Arena(
        name=name, contenders=names, title=title, description=description, created_by=user
    )
    return create_owned(arena, user, owner, visibility)


def _contenders(user: Any, given: Any) -> list[str]:
    if not isinstance(given, list) or not all(isinstance(name, str) for name in given):
        raise PlatformError("'contenders' must be a list of model names.", param="contenders")
    names: list[str] = []
    for name in given:
        served, _ = resolve_model(user, name)
        if served not in names:
            names.append(served)
    if not 2 <= len(names) <= MAX_CONTENDERS:
        raise PlatformError(
            f"An arena needs 2 to {MAX_CONTENDERS} distinct models.", param="contenders"
        )
    return names


def arenas_of(user: Any) -> QuerySet[Arena]:
    """The arenas ``user`` may read."""
    return Arena.objects.restrict(user, "read")


def battles_of(user: Any, arena: Arena | None = None) -> QuerySet[Battle]:
    """``user``'s own battles (of ``arena`` when given) in arenas they may still read."""
    if not getattr(user, "is_authenticated", False):
        return Battle.objects.none()
    mine = Battle.objects.filter(user=user, arena__in=arenas_of(user)).select_related("arena")
    return mine.filter(arena=arena) if arena is not None else mine


def get_battle(user: Any, battle_id: Any) -> Battle:
    """One of ``user``'s battles; NotFound (404) for any other."""
    battle = battles_of(user).filter(pk=str(battle_id)[:40].replace("\x00", "")).first()
    if battle is None:
        raise NotFound("No such battle.", param="id")
    return battle


def draw(contenders: list[str], seed: str) -> tuple[str, str]:
    """Two distinct contenders in random order, the same for the same ``seed``."""
    first, second = random.Random(seed).sample(sorted(set(contenders)), 2)
    return first, second


def start_battle(user: Any, arena: Arena, prompt: Any) -> Battle:
    """A new battle of ``user`` in ``arena`` (which they may read): two contenders drawn
    and asked ``prompt``. Raises 400 for an empty or too long prompt or an arena with
    fewer than two contenders, RateLimited (429) past the user's battles per minute. A
    contender that fails to answer leaves the battle with ``error`` set (no vote)."""
    text = prompt if isinstance(prompt, str) else ""
    if not text.strip() or len(text) > MAX_PROMPT_CHARS or "\x00" in text:
        raise PlatformError(
            f"'prompt' must be a non-empty text of at most {MAX_PROMPT_CHARS} characters.",
            param="prompt",
        )
    if len(set(arena.contenders)) < 2:
        raise PlatformError("This arena has fewer than two models.", param="arena")
    take_battle_slot(user)
    battle = Battle(arena=arena, user=user, prompt=text.strip())
    battle.model_a, battle.model_b = draw(arena.contenders, battle.id)
    battle.save(force_insert=True)
    answers = ask_both(user, battle)
    battle.answer_a, battle.answer_b = (text for text, _ in answers)
    battle.error = " ".join(error for _, error in answers if error)
    battle.save(update_fields=["answer_a", "answer_b", "error"])
    return battle


def take_battle_slot(user: Any) -> None:
    """Take one battle from the user's bucket; RateLimited (429, with Retry-After) when
    it is empty, LimitsUnavailable (503) when Redis cannot be reached."""
    from portal.services.keys import sync_redis

    per_minute = int(_setting("EVAL_ARENA_BATTLES_PER_MINUTE", BATTLES_PER_MINUTE))
    if per_minute <= 0:
        return
    bucket = scripts.rate_keys(f"arena:u{user.pk}")
    # RESERVE's budget keys count tokens and spend: a battle reserves none of either.
    tally = bucket[0] + ":tally"
    arguments = [per_minute, 0, 0, 0, 0, -1, -1, -1, -1, "", 0, 0]
    try:
        answer = sync_redis().eval(scripts.RESERVE, 4, *bucket, tally, tally, *arguments)
    except RedisError as exc:
        raise limits_unavailable() from exc
    verdict = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
    if verdict != "ok":
        retry = max(1, math.ceil(int(answer[5]) / 1000))
        raise RateLimited(
            f"You may start {per_minute} battles a minute; try again in {retry} s.",
            headers={"Retry-After": str(retry)},
        )


def ask_both(user: Any, battle: Battle) -> list[tuple[str, str]]:
    """Both contenders' answers to the battle's prompt as ``(text, error)`` pairs, asked
    at once with a key of the user's made for this battle and revoked afterwards."""
    from portal.services.keys import create_api_key, revoke_api_key

    models = [battle.model_a, battle.model_b]
    key, secret = create_api_key(
        user,
        name=f"arena {battle.id}",
        expires_at=timezone.now() + KEY_TTL,
        scopes=["inference"],
        allowed_models=models,
    )
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            asked = [
                pool.submit(_ask, secret, side, model, battle)
                for side, model in zip("AB", models, strict=True)
            ]
            return [future.result() for future in asked]
    finally:
        revoke_api_key(user, key.pk)


def _ask(secret: str, side: str, model: str, battle: Battle) -> tuple[str, str]:
    """One contender's answer, or an error that does not name the model (the voter must
    not learn it before voting); the details go to the log."""
    url = str(_setting("EVAL_GATEWAY_URL", settings.PUBLIC_URL)).rstrip("/")
    body = {
        "model": model,
        "messages": [{"role": "user", "content": battle.prompt}],
        "max_tokens": int(_setting("EVAL_ARENA_MAX_TOKENS", MAX_TOKENS)),
        "temperature": TEMPERATURE,
    }
    try:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=float(_setting("EVAL_ARENA_TIMEOUT_S", TIMEOUT_S)),
        )
        if response.status_code != 200:
            logger.warning("arena %s: %s answered %s", battle.id, model, response.text[:500])
            return "", f"Model {side} could not answer (HTTP {response.status_code})."
        content = response.json()["choices"][0]["message"]["content"]
        # A model may emit NUL, which PostgreSQL's text refuses.
        return str(content or "").replace("\x00", "\ufffd"), ""
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        logger.warning("arena %s: %s failed: %r", battle.id, model, exc)
        return "", f"Model {side} could not answer."


def vote(user: Any, battle: Battle, winner: Any) -> Battle:
    """Record the vote of the battle's user (``a``, ``b``, ``tie`` or ``both_bad``);
    after it the battle reveals its models. NotFound (404) for anyone else's battle,
    400 for another winner, Conflict (409) for a second vote or a battle that has no
    two answers."""
    if battle.user_id != getattr(user, "pk", None):
        raise NotFound("No such battle.", param="id")
    if winner not in Winner.values:
        raise PlatformError(f"'winner' must be one of {', '.join(Winner.values)}.", param="winner")
    if battle.error:
        raise Conflict("This battle has no two answers to compare.", param="winner")
    now = timezone.now()
    with transaction.atomic():
        updated = Battle.objects.filter(pk=battle.pk, user=user, winner="").update(
            winner=winner, voted_at=now
        )
    if not updated:
        raise Conflict("You have voted on this battle already.", param="winner")
    battle.winner, battle.voted_at = winner, now
    return battle


def revealed(battle: Battle) -> bool:
    """Whether the battle's models may be shown: once its vote is in."""
    return bool(battle.winner)


def arena_ratings(arena: Arena) -> dict[str, Any]:
    """The arena's ratings: ``{votes, rounds, models: [{model, rating, lo, hi, battles,
    wins, ties}]}``, best first. Cached on the arena; refitted when votes were added."""
    voted = Battle.objects.filter(arena=arena).exclude(winner="").filter(error="")
    votes = voted.count()
    if arena.ratings and arena.ratings_votes == votes:
        return arena.ratings
    battles = list(voted.order_by("pk").values_list("model_a", "model_b", "winner"))
    rounds = int(_setting("EVAL_ARENA_BOOTSTRAP_ROUNDS", ratings.ROUNDS))
    table = _table(battles, rounds)
    # Only a fresher table replaces the cache (two readers may refit at once).
    Arena.objects.filter(pk=arena.pk, ratings_votes__lte=votes).update(
        ratings=table, ratings_votes=votes
    )
    arena.ratings, arena.ratings_votes = table, votes
    return table


def _table(battles: list[tuple[str, str, str]], rounds: int) -> dict[str, Any]:
    fitted = ratings.bradley_terry(battles)
    intervals = ratings.bootstrap_intervals(battles, rounds=rounds, seed=0)
    counts = {name: {"battles": 0, "wins": 0, "ties": 0} for name in fitted}
    for a, b, winner in battles:
        for name, side in ((a, "a"), (b, "b")):
            if name not in counts:
                continue
            counts[name]["battles"] += 1
            counts[name]["wins"] += winner == side
            counts[name]["ties"] += winner in (Winner.TIE, Winner.BOTH_BAD)
    rows = [
        {
            "model": name,
            "rating": round(rating, 2),
            "lo": round(intervals[name][0], 2),
            "hi": round(intervals[name][1], 2),
            **counts[name],
        }
        for name, rating in sorted(fitted.items(), key=lambda item: (-item[1], item[0]))
    ]
    return {"votes": len(battles), "rounds": rounds, "models": rows}


__all__ = [
    "arena_ratings",
    "arenas_of",
    "ask_both",
    "battles_of",
    "create_arena",
    "draw",
    "get_battle",
    "revealed",
    "start_battle",
    "take_battle_slot",
    "vote",
]
