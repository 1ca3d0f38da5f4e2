"""What the gateway applies, in memory, per process: the enabled policies, the moderation
pipeline and the users held back for repeated violations.

Every service that changes a policy, a list, a suspension or the active classifier calls
:func:`bump` after commit (``transaction.on_commit(snapshot.bump)``); the gateway reads
the counter :data:`VERSION_KEY` at most once a second and, when it moved, builds a new
:class:`Snapshot` with :func:`load` in a thread while it keeps serving the old one.

Offenders: the gateway counts a user's blocked inputs in Redis and, past the policy's
``offenders`` thresholds, marks them in the hash :data:`OFFENDERS_KEY` (user id →
``{"level", "until", "rpm", "ts"}``) and bumps. :func:`load` reads that hash together
with the ``Suspension`` rows: a row lifted after a mark was set clears it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from governance.moderation.lexicon import Lexicon, LexiconChecker, Term, default_lexicon
from governance.moderation.patterns import PatternChecker
from governance.moderation.pii import PiiChecker
from governance.moderation.pipeline import Pipeline, load_classifier
from governance.moderation.taxonomy import is_known
from governance.moderation.types import Checker
from governance.policy import DEFAULT_POLICY, Policy, PolicyError
from governance.policy import build as build_policy

logger = logging.getLogger(__name__)

VERSION_KEY = "openmaas:governance:version"
OFFENDERS_KEY = "openmaas:governance:offenders"


@dataclass(frozen=True)
class Offender:
    """A user the gateway holds back: ``throttled`` (to ``rpm`` requests a minute) or
    ``suspended``, until ``until`` (unix seconds)."""

    level: str
    until: float
    rpm: int = 0
    ts: float = 0.0

    def active(self, now: float | None = None) -> bool:
        return self.until > (time.time() if now is None else now)


@dataclass(frozen=True)
class Snapshot:
    version: int
    pipeline: Pipeline
    by_key: dict[int, Policy] = field(default_factory=dict)
    by_served: dict[tuple[str, int | None, int | None], Policy] = field(default_factory=dict)
    by_org: dict[int, Policy] = field(default_factory=dict)
    by_user: dict[int, Policy] = field(default_factory=dict)
    offenders: dict[int, Offender] = field(default_factory=dict)


def resolve(
    snapshot: Snapshot,
    *,
    key_id: int | None,
    user_id: int | None,
    org_id: int | None,
    served_name: str,
    model_owner_org_id: int | None,
    model_owner_user_id: int | None,
) -> Policy:
    """The policy for one request: the key's > the served name's (a policy of the model's
    owner) > the caller's organisation's (or, without one, the user's) > the default."""
    if key_id is not None and key_id in snapshot.by_key:
        return snapshot.by_key[key_id]
    found = snapshot.by_served.get((served_name, model_owner_org_id, model_owner_user_id))
    if found is not None:
        return found
    if org_id is not None and org_id in snapshot.by_org:
        return snapshot.by_org[org_id]
    if user_id is not None and user_id in snapshot.by_user:
        return snapshot.by_user[user_id]
    return DEFAULT_POLICY


def bump() -> int:
    """Tell every gateway to reload its snapshot; the new version (0 if Redis is down)."""
    from portal.services.keys import sync_redis

    try:
        return int(sync_redis().incr(VERSION_KEY))
    except RedisError:
        logger.warning("Redis unreachable: governance snapshot not bumped")
        return 0


def current_version() -> int:
    from portal.services.keys import sync_redis

    try:
        return int(sync_redis().get(VERSION_KEY) or 0)
    except RedisError:
        return 0


def load(version: int | None = None, *, classifier: bool = True) -> Snapshot:
    """A fresh snapshot from the database and Redis (runs in a worker thread of the
    gateway; manages its own connection). ``classifier=False`` leaves the classifier
    out (a gateway's first snapshot: loading it may mean training it)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        return build(version, classifier=classifier)
    finally:
        close_old_connections()


def build(version: int | None = None, *, classifier: bool = True) -> Snapshot:
    """:func:`load` on the caller's database connection."""
    seen = current_version() if version is None else version
    pipeline = build_pipeline(classifier=classifier)
    snapshot = Snapshot(version=seen, pipeline=pipeline, offenders=offenders())
    _add_policies(snapshot)
    return snapshot


def build_pipeline(*, classifier: bool = True) -> Pipeline:
    """The default checkers, the lexicon extended by the platform's lists (current
    versions of its lexicons and allow-lists), and the classifier when one is available."""
    extra, allow = platform_terms()
    lexicon = default_lexicon()
    if extra or allow:
        lexicon = lexicon.merged(Lexicon(extra, allow))
    checkers: list[Checker] = [LexiconChecker(lexicon), PatternChecker(), PiiChecker()]
    if classifier:
        # A classifier an admin trained and activated replaces the shipped one.
        from governance.services.classifiers import sync_active

        sync_active()
    loaded = load_classifier() if classifier else None
    if loaded is not None:
        # Its model loads on first use (importing scikit-learn, reading the weights:
        # seconds). Here, in the builder's thread, not in a gateway's event loop.
        loaded.check("")
        checkers.append(loaded)
    return Pipeline(checkers)


def platform_terms() -> tuple[list[Term], list[str]]:
    """The platform lists' current terms and allowed words (lists without an owner)."""
    from governance.services.lists import active_terms

    terms: list[Term] = []
    for item in active_terms("lexicon"):
        try:
            weight = float(item.get("weight", 1.0))
        except (TypeError, ValueError):
            continue
        term = Term(str(item.get("text", "")).strip(), str(item.get("category", "")), weight)
        # An unknown category or weight in an old version: skipped, not fatal.
        if term.text and is_known(term.category) and 0.0 <= weight <= 1.0:
            terms.append(term)
    allow = [str(item.get("text", "")) for item in active_terms("allow")]
    return terms, allow


def _add_policies(snapshot: Snapshot) -> None:
    from governance.models import Policy as PolicyRow

    for row in PolicyRow.objects.filter(enabled=True).order_by("pk"):
        try:
            policy = build_policy(
                row.rules, row.offenders, row.labels, ident=row.pk, version=row.version
            )
        except PolicyError as exc:
            logger.warning("Policy %s skipped: %s", row.pk, exc)
            continue
        if row.api_key_id is not None:
            snapshot.by_key[row.api_key_id] = policy
        elif row.served_name:
            snapshot.by_served[(row.served_name, row.owner_org_id, row.owner_user_id)] = policy
        elif row.owner_org_id is not None:
            snapshot.by_org[row.owner_org_id] = policy
        elif row.owner_user_id is not None:
            snapshot.by_user[row.owner_user_id] = policy


def offenders(now: float | None = None) -> dict[int, Offender]:
    """Users held back now: the gateway's marks in Redis not lifted since, and the
    active ``Suspension`` rows."""
    from django.db.models import Q
    from django.utils import timezone

    from governance.models import Suspension
    from portal.services.keys import sync_redis

    now = time.time() if now is None else now
    found: dict[int, Offender] = {}
    lifted: dict[int, float] = {}
    rows = Suspension.objects.filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
    for row in rows.order_by("created_at"):
        if row.lifted_at is not None:
            lifted[row.user_id] = max(lifted.get(row.user_id, 0.0), row.lifted_at.timestamp())
            continue
        until = row.until.timestamp() if row.until else now + 10 * 365 * 86400
        found[row.user_id] = Offender(row.level, until, 0, row.created_at.timestamp())
    try:
        marks = sync_redis().hgetall(OFFENDERS_KEY)
    except RedisError:
        marks = {}
    for raw_user, raw in marks.items():
        try:
            user_id, mark = int(raw_user), json.loads(raw)
            offender = Offender(
                str(mark["level"]),
                float(mark["until"]),
                int(mark.get("rpm", 0)),
                float(mark.get("ts", 0)),
            )
        except (ValueError, KeyError, TypeError):
            continue
        if not offender.active(now) or offender.ts <= lifted.get(user_id, 0.0):
            continue
        known = found.get(user_id)
        if known is None or _rank(known) < _rank(offender):
            found[user_id] = offender
    return found


def _rank(offender: Offender) -> tuple[int, float]:
    return (2 if offender.level == "suspended" else 1), offender.until
