"""Content moderation inline in the gateway (``GOVERNANCE_INLINE``).

Per request (:func:`begin`, before routing): a suspended user gets 403
``account_suspended``, a throttled one 429 past the policy's ``throttle_rpm``; the policy
is resolved from the process's snapshot (``governance.services.snapshot``) and the
request's text checked (cheapest stages first, early stop): a block is 400
``content_policy_violation`` and nothing goes upstream, and it counts towards the user's
violations (Redis), which throttle and then suspend them per the policy's ``offenders``.

Per answer: a non-streamed one is checked whole (:meth:`Governed.answer`), a stream
through ``governance.inline.StreamFilter`` (:meth:`Governed.stream`); every successful
generation gets its content id ``aigc-<request_id>`` and the signed implicit label (a
top-level ``aigc`` field and the ``x-aigc-label`` header, or for streams the
``x-aigc-content-id`` header and an ``aigc`` chunk before ``data: [DONE]``), and a
provenance event. Decisions other than allow become events on the governance stream,
sent with the ledger's write (:meth:`Governed.finish`); allow decisions are only counted
in Prometheus (``governance.metrics``). The dear stages (the classifier) run batched over
the requests of one turn of the event loop (:class:`DearStages`); on a streamed answer,
and on input whose policy they cannot make block, they run after the answer is sent and
can then only flag.

The snapshot is checked for a new version at most once a second, in a task of its own;
a new one is built in a thread while the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from governance.inline import (
    NOTICE,
    Check,
    Guard,
    StreamFilter,
    decision_event,
    filter_answer,
    request_text,
    worse,
)
from governance.labels.implicit import header_value, make_label
from governance.labels.text import text_sha256
from governance.metrics import count_decision
from governance.moderation.types import CheckResult
from governance.policy import ActionName, Policy
from governance.services import snapshot as snapshots
from governance.services.events import pack
from portal.errors import PermissionDenied, PlatformError
from portal.limits.wire import wire
from portal.loops import PerLoop

logger = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
CONTEXT_MESSAGES = 20
CONTEXT_CHARS = 2000
VIOLATIONS_PREFIX = "openmaas:governance:violations:"
RPM_PREFIX = "openmaas:governance:rpm:"
# INCR with the window's expiry set by the first violation: the count in the window.
_COUNT = (
    "local n = redis.call('INCR', KEYS[1]) "
    "if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n"
)


class ContentPolicyViolation(PlatformError):
    status = 400
    code = "content_policy_violation"


class AccountSuspended(PermissionDenied):
    code = "account_suspended"


class Throttled(PlatformError):
    status = 429
    code = "rate_limit_exceeded"


_tasks: set[asyncio.Task[Any]] = set()


def background(work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` in a task of its own, kept referenced until it ends."""
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


DEFER_S = 0.002
MAX_BATCH = 256
Results = list[dict[str, CheckResult]]  # per text: checker name → result


class DearStages:
    """Runs the dear stages (``Guard.dear``: the classifier) for many texts in one pass
    per checker: scikit-learn's cost is mostly per call, not per text (one short text
    ≈ 0.4 ms, 64 of them ≈ 2.7 ms). A check that decides an answer (``hurry``) runs at
    the next turn of the event loop with whatever else was queued in this one; checks
    that can only flag wait up to :data:`DEFER_S` for company. One per event loop."""

    def __init__(self) -> None:
        self.pending: list[tuple[Guard, list[str], asyncio.Future[Results]]] = []
        self.handle: asyncio.Handle | None = None
        self.soon = False

    def results(self, guard: Guard, texts: list[str], *, hurry: bool) -> asyncio.Future[Results]:
        """The dear stages' results for ``texts`` (in order), once their batch has run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Results] = loop.create_future()
        self.pending.append((guard, texts, future))
        hurry = hurry or len(self.pending) >= MAX_BATCH
        if self.handle is None or (hurry and not self.soon):
            if self.handle is not None:
                self.handle.cancel()
            self.soon = hurry
            if hurry:
                self.handle = loop.call_soon(self._run)
            else:
                self.handle = loop.call_later(DEFER_S, self._run)
        return future

    def _run(self) -> None:
        self.handle = None
        pending, self.pending = self.pending, []
        groups: dict[int, list[tuple[Guard, list[str], asyncio.Future[Results]]]] = {}
        for item in pending:  # a snapshot reload may leave two guards in one batch
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            texts = [text for _, group, _ in items for text in group]
            try:
                per_text = _dear_results(items[0][0], texts)
            except Exception as exc:
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            at = 0
            for _, group, future in items:
                if not future.done():
                    future.set_result(per_text[at : at + len(group)])
                at += len(group)


def _dear_results(guard: Guard, texts: list[str]) -> Results:
    per_text: Results = [{} for _ in texts]
    for checker in guard.dear:
        many = getattr(checker, "check_many", None)
        results = many(texts) if many is not None else [checker.check(t) for t in texts]
        for slot, result in zip(per_text, results, strict=True):
            slot[checker.name] = result
    return per_text


# This event loop's batcher of dear checks.
dear_stages = PerLoop(DearStages)


class _State:
    """This process's snapshot and guard."""

    def __init__(self) -> None:
        self.snapshot: snapshots.Snapshot | None = None
        self.guard: Guard | None = None
        self.checked = 0.0
        self.checking = False
        self.executor = ThreadPoolExecutor(1, "openmaas-governance")
        self.first: asyncio.Lock | None = None

    def install(self, snapshot: snapshots.Snapshot) -> None:
        self.guard = Guard(snapshot.pipeline, lookback=settings.GOVERNANCE_LOOKBACK_CHARS)
        self.snapshot = snapshot

    async def current(self) -> tuple[snapshots.Snapshot, Guard]:
        if self.snapshot is None:
            if self.first is None:
                self.first = asyncio.Lock()
            async with self.first:
                if self.snapshot is None:
                    # Policies and the cheap stages now; the classifier (which may have
                    # to be trained first) joins in the background.
                    loop = asyncio.get_running_loop()
                    first = partial(snapshots.load, classifier=False)
                    self.install(await loop.run_in_executor(self.executor, first))
                    self.checked = time.monotonic()
                    self.checking = True
                    background(self._refresh(force=True))
        elif not self.checking and time.monotonic() - self.checked >= CHECK_EVERY_S:
            self.checking = True
            background(self._refresh())
        assert self.snapshot is not None and self.guard is not None
        return self.snapshot, self.guard

    async def _refresh(self, *, force: bool = False) -> None:
        try:
            (raw,) = await wire().execute(("GET", snapshots.VERSION_KEY))
            version = int(raw or 0) if not isinstance(raw, Exception) else None
            old = self.snapshot
            if version is not None and old is not None and (force or version != old.version):
                loop = asyncio.get_running_loop()
                self.install(await loop.run_in_executor(self.executor, snapshots.load, version))
        except (RedisError, ValueError):
            logger.warning("Redis unreachable: governance snapshot not refreshed")
        except Exception:
            logger.exception("governance snapshot reload failed; the old one stays")
        finally:
            self.checked = time.monotonic()
            self.checking = False


state = _State()


def label_key() -> str:
    return settings.GOVERNANCE_LABEL_KEY or settings.SECRET_KEY


class Governed:
    """One request's moderation: its policy, checks and the events they leave."""

    __slots__ = (
        "content_id",
        "events",
        "ex",
        "filter",
        "grant",
        "guard",
        "later_input",
        "payload",
        "policy",
    )

    def __init__(self, ex: Any, grant: Any, payload: dict[str, Any], policy: Policy, guard: Guard):
        self.ex = ex
        self.grant = grant
        self.payload = payload
        self.policy = policy
        self.guard = guard
        self.content_id = f"aigc-{ex.request_id}"
        self.events: list[dict[str, Any]] = []
        self.filter: StreamFilter | None = None
        self.later_input: Check | None = None  # its cheap stages' check; the dear run later

    # -- events -------------------------------------------------------------

    def _ids(self) -> dict[str, Any]:
        ex, grant = self.ex, self.grant
        return {
            "request_id": ex.request_id,
            "served_name": ex.model,
            "user_id": grant.user_id,
            "org_id": grant.org_id,
            "key_id": grant.key_id,
            "policy_id": self.policy.ident or None,
            "policy_version": self.policy.version,
        }

    def _context(self, answer: str = "") -> dict[str, Any]:
        context: dict[str, Any] = {"model": self.ex.model, "endpoint": self.ex.kind}
        if self.ex.kind == "chat":
            messages = self.payload.get("messages") or []
            context["messages"] = [
                {
                    "role": str(m.get("role", ""))[:32],
                    "content": _bounded(m.get("content")),
                }
                for m in messages[-CONTEXT_MESSAGES:]
                if isinstance(m, dict)
            ]
        else:
            context["prompt"] = _bounded(self.payload.get("prompt"))
        if answer:
            context["answer"] = answer[:CONTEXT_CHARS]
        return context

    def decided(self, check: Check, action: ActionName | None = None, answer: str = "") -> None:
        """Count a decision; keep an event unless it allowed the text."""
        action = action or check.action
        count_decision("gateway", check.direction, action)
        if action == "allow":
            return
        suffix = "in" if check.direction == "input" else "out"
        self.events.append(
            decision_event(
                decision_id=f"{self.ex.request_id}-{suffix}",
                ts=time.time(),
                source="gateway",
                check=check,
                direction=check.direction,
                action=action,
                text_sha256=text_sha256(check.text),
                excerpt_chars=settings.GOVERNANCE_EXCERPT_CHARS,
                content_id=self.content_id if check.direction == "output" else "",
                context=self._context(answer),
                **self._ids(),
            )
        )

    def label(self, text: str) -> dict[str, str]:
        """The signed implicit label of this generation; notes its provenance."""
        digest = text_sha256(text, self.policy.labels.get("text") or "「人工智能生成」")
        label = make_label(self.content_id, settings.GOVERNANCE_PRODUCER, digest, key=label_key())
        ids = self._ids()
        self.events.append(
            {
                "kind": "provenance",
                "content_id": self.content_id,
                "ts": self.ex.ts,
                "served_name": ids["served_name"],
                "request_id": ids["request_id"],
                "user_id": ids["user_id"],
                "org_id": ids["org_id"],
                "text_sha256": digest,
                "label": label,
                # Whether the route's engines plant the text watermark.
                "watermarked": bool(self.ex.route is not None and self.ex.route.watermarked),
            }
        )
        return label

    # -- answers ------------------------------------------------------------

    async def answer(self, status: int, payload: bytes) -> bytes:
        """A non-streamed answer, checked (its dear stages batched with other requests'),
        labelled and serialised again."""
        if status != 200:
            return payload
        try:
            answer = json.loads(payload)
        except ValueError:
            return payload
        if not isinstance(answer, dict):
            return payload
        texts = _texts(answer, self.ex.kind)
        dear = None
        if self.guard.dear and texts:
            results = await dear_stages().results(self.guard, texts, hurry=True)
            dear = dict(zip(texts, results, strict=True))
        action, checks = filter_answer(answer, self.ex.kind, self.guard, self.policy, dear)
        for check in checks:
            self.decided(check)
        if action != "block" and texts:
            label = self.label(texts[0])
            answer["aigc"] = label
            self.ex.headers.append((b"x-aigc-label", header_value(label).encode()))
        return json.dumps(answer, ensure_ascii=False).encode()

    def stream(self) -> StreamFilter:
        """The filter of this stream; the content id header goes out with the response."""
        self.ex.headers.append((b"x-aigc-content-id", self.content_id.encode()))
        self.filter = self.guard.stream(self.policy, self.ex.kind, self._trailer)
        return self.filter

    def _trailer(self, filtered: StreamFilter) -> bytes:
        label = self.label(filtered.text(0))
        chunk = {**filtered.template, "choices": [], "aigc": label}
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def finish(self) -> list[str] | None:
        """The packed events to send now; None when checks left for later send them
        (the request's input through the dearer stages, a stream's whole answer)."""
        filtered = self.filter
        streamed = filtered is not None and not filtered.blocked and self.ex.status == 200
        dear = bool(self.guard.dear)
        blocked = filtered is not None and filtered.blocked
        if blocked or (streamed and not dear):
            self._stream_decision(None)
        if self.later_input is not None or (streamed and dear):
            background(self._later(streamed and dear))
            return None
        return [pack(e) for e in self.events] if self.events else None

    async def _later(self, stream: bool) -> None:
        """The dear stages left for after the answer (they can only flag: the input's,
        and a stream's whole answer, whose cheap stages ran on its chunks), batched with
        other requests', then the events."""
        from portal.gateway.ledger import record

        texts = [] if self.later_input is None else [self.later_input.text]
        if stream:
            assert self.filter is not None
            texts.append(self.filter.text(0))
        try:
            results = await dear_stages().results(self.guard, texts, hurry=False)
            if self.later_input is not None:
                check = self.guard.complete(self.later_input, results[0].values(), self.policy)
                self.decided(check, "flag" if check.action != "allow" else "allow")
            if stream:
                final = self.guard.judged(texts[-1], "output", results[-1].values(), self.policy)
                self._stream_decision(final)
        except Exception:
            logger.exception("a deferred moderation check failed")
        if self.events:
            record(None, None, [pack(e) for e in self.events])

    def _stream_decision(self, final: Check | None) -> None:
        """One output decision for a stream: the chunks' findings and the final check's
        (which can only flag: the answer is out)."""
        filtered = self.filter
        assert filtered is not None
        action: ActionName = filtered.action
        categories = set(filtered.categories)
        scores = dict(filtered.scores)
        if final is not None and final.action != "allow":
            action = worse(action, "flag")
            categories.update(final.categories)
            for code, score in final.verdict.scores.items():
                scores[code] = max(scores.get(code, 0.0), score)
        text = filtered.text(0)
        count_decision("gateway", "output", action)
        if action == "allow":
            return
        self.events.append(
            decision_event(
                decision_id=f"{self.ex.request_id}-out",
                ts=time.time(),
                source="gateway",
                direction="output",
                action=action,
                categories=categories,
                scores=scores,
                spans=filtered.spans,
                text=text,
                text_sha256=text_sha256(text) if text else "",
                excerpt_chars=settings.GOVERNANCE_EXCERPT_CHARS,
                content_id=self.content_id,
                context=self._context(text),
                more=final.verdict.results if final is not None else (),
                **self._ids(),
            )
        )


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value[:CONTEXT_CHARS]
    if isinstance(value, list):
        return [_bounded(v) for v in value[:CONTEXT_MESSAGES]]
    if isinstance(value, dict):
        return {str(k)[:64]: _bounded(v) for k, v in list(value.items())[:16]}
    return value


def _texts(answer: dict[str, Any], kind: str) -> list[str]:
    texts = []
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        holder = choice.get("message") if kind == "chat" else choice
        if not isinstance(holder, dict):
            continue
        text = holder.get("content" if kind == "chat" else "text")
        if isinstance(text, str):
            texts.append(text)
    return texts


async def begin(ex: Any, grant: Any, payload: dict[str, Any], route: Any) -> Governed:
    """Hold back suspended and throttled users, resolve the policy and check the input
    (raises the refusal; a blocked input's decision is in ``ex.governed``'s events)."""
    snapshot, guard = await state.current()
    policy = snapshots.resolve(
        snapshot,
        key_id=grant.key_id,
        user_id=grant.user_id,
        org_id=grant.org_id,
        served_name=route.served_name,
        model_owner_org_id=route.owner_org_id,
        model_owner_user_id=route.owner_user_id,
    )
    gov = ex.governed = Governed(ex, grant, payload, policy, guard)
    offender = snapshot.offenders.get(grant.user_id)
    if offender is not None and offender.active():
        await _hold_back(offender, grant.user_id, policy)
    text = request_text(payload, ex.kind)
    check = guard.check(text, policy, "input", only_cheap=True)
    later = False
    if guard.dear and check.action != "block":
        if guard.may_block(policy, "input"):
            (results,) = await dear_stages().results(guard, [text], hurry=True)
            check = guard.complete(check, results.values(), policy)
        else:
            later = True  # the dear stages cannot block here: they run afterwards
    if later:
        gov.later_input = check
    else:
        # Redacting a request would change what the user asked: logged like a flag.
        gov.decided(check, "flag" if check.action == "redact" else None)
    if check.action == "block":
        background(_count_violation(grant, policy, snapshot))
        raise ContentPolicyViolation(
            "Your request was rejected by the content policy"
            f" ({', '.join(check.categories) or 'policy'}).",
            param="messages" if ex.kind == "chat" else "prompt",
        )
    return gov


async def _hold_back(offender: snapshots.Offender, user_id: int, policy: Policy) -> None:
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(offender.until))
    if offender.level == "suspended":
        raise AccountSuspended(
            f"This account is suspended for repeated content policy violations until {until}."
        )
    rpm = offender.rpm or policy.offenders["throttle_rpm"]
    minute = int(time.time() // 60)
    key = f"{RPM_PREFIX}{user_id}:{minute}"
    try:
        count, _ = await wire().execute(("INCR", key), ("EXPIRE", key, 61))
    except RedisError:
        return
    if isinstance(count, int) and count > rpm:
        raise Throttled(
            f"This account is throttled to {rpm} requests a minute for repeated content"
            f" policy violations (until {until}).",
            headers={"Retry-After": str(60 - int(time.time()) % 60)},
        )


async def _count_violation(grant: Any, policy: Policy, snapshot: snapshots.Snapshot) -> None:
    """One more blocked input of this user; throttle or suspend them at the thresholds."""
    rules = policy.offenders
    key = f"{VIOLATIONS_PREFIX}{grant.user_id}"
    try:
        (count,) = await wire().execute(("EVAL", _COUNT, 1, key, max(rules["window_s"], 1)))
        if not isinstance(count, int):
            return
        level, until, rpm = "", 0.0, 0
        now = time.time()
        if rules["suspend_after"] and count == rules["suspend_after"]:
            level, until = "suspended", now + rules["suspend_s"]
        elif rules["throttle_after"] and count == rules["throttle_after"]:
            level, until, rpm = "throttled", now + rules["window_s"], rules["throttle_rpm"]
        if not level:
            return
        mark = {"level": level, "until": until, "rpm": rpm, "ts": now}
        await wire().execute(
            ("HSET", snapshots.OFFENDERS_KEY, str(grant.user_id), json.dumps(mark)),
            ("INCR", snapshots.VERSION_KEY),
        )
    except RedisError:
        logger.warning("Redis unreachable: a content policy violation was not counted")
        return
    for held in {id(snapshot): snapshot, id(state.snapshot): state.snapshot}.values():
        if held is not None:  # the one in use now, too, if it was reloaded meanwhile
            held.offenders[grant.user_id] = snapshots.Offender(level, until, rpm, now)
    from portal.gateway.ledger import send_governance

    reason = f"{count} requests blocked by the content policy within {rules['window_s']} s"
    event = {
        "kind": "offender",
        "ts": now,
        "user_id": grant.user_id,
        "org_id": grant.org_id,
        "level": level,
        "violations": count,
        "until": until,
        "reason": reason,
    }
    await send_governance([pack(event)])


def finish(ex: Any) -> list[str] | None:
    """The request's packed governance events for the ledger (see :meth:`Governed.finish`)."""
    gov: Governed | None = ex.governed
    if gov is None:
        return None
    return gov.finish()


__all__ = ["NOTICE", "begin", "finish"]
