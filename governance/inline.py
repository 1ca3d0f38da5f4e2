"""Moderation inline in the gateway: the input guard and the output filter. Pure (no
Django): the gateway (``portal.gateway.moderation``) supplies the pipeline, the policy and
the label; this module decides and rewrites.

- :meth:`Guard.check` runs a text through the pipeline (cheapest stages first, stopping
  once the policy's block is certain) and applies the policy: a :class:`Check`. The
  dear stages (``Guard.dear``: the classifier) can also be run by the caller for many
  texts at once and handed in (``given``, :meth:`Guard.complete`, :meth:`Guard.judged`).
- :class:`StreamFilter` sits on an SSE answer. Each content delta is checked with the
  cheap in-process stages only (lexicon, patterns, PII) over a bounded look-back window:
  the last ``lookback`` characters of the lane plus the new text, so a term split across
  any number of chunks is caught when its last piece arrives, and only matches that reach
  into the new text count (nothing is reported twice). ``block`` ends the stream with a
  chunk whose ``finish_reason`` is ``"content_filter"`` and ``data: [DONE]``; when the
  policy redacts anything in output, whole events are held back until ``lookback``
  characters follow them (or the stream ends), so a span is masked before any of it is
  sent. The dear stages run on the whole answer afterwards (the caller's
  :meth:`Guard.judged`), never per chunk.
- :func:`filter_answer` does the same to a non-streamed answer, whole.

Masking keeps lengths (one :data:`MASK` per character), so offsets stay valid across
held events.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from governance.moderation.pipeline import Pipeline, Verdict
from governance.moderation.taxonomy import rollup
from governance.moderation.types import CheckResult, Span
from governance.policy import SEVERITY, ActionName, DirectionName, Policy

LOOKBACK_CHARS = 64
MASK = "*"
NOTICE = "抱歉，该内容因违反内容安全政策已被拦截。(Withheld by the content policy.)"
CHEAP_COST = 1  # stages at or below this cost run per chunk (lexicon, patterns, PII)
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A JSON string literal's value (C), without json.loads' encoding detection and wrappers.
_scanstring: Callable[[str, int], tuple[str, int]] = vars(json.decoder)["scanstring"]
_LITERAL = rb'"(?:[^"\\]|\\.)*"'  # a JSON string literal
_INDEX = re.compile(rb'"index":\s*(\d+)')
_CHAT_TEXT = re.compile(rb'"content":\s*("(?:[^"\\]|\\.)*")')
_COMPLETION_TEXT = re.compile(rb'"text":\s*("(?:[^"\\]|\\.)*")')
_FINISHED = re.compile(rb'"finish_reason":\s*"')
_USAGE_ONLY = re.compile(rb'"choices":\s*\[\s*\]')


def request_text(payload: Mapping[str, Any], kind: str) -> str:
    """The text a request asks about: chat messages' text parts (one per line) or the
    completion prompt(s); token-id prompts have no text."""
    parts: list[str] = []
    if kind == "chat":
        for message in payload.get("messages") or ():
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    else:
        prompt = payload.get("prompt")
        if isinstance(prompt, str):
            parts.append(prompt)
        elif isinstance(prompt, list):
            parts.extend(p for p in prompt if isinstance(p, str))
    return "\n".join(parts)


def cheap(pipeline: Pipeline) -> Pipeline:
    """The pipeline's in-process stages cheap enough to run per chunk."""
    return Pipeline([c for c in pipeline.checkers if c.cost <= CHEAP_COST], pipeline.thresholds)


def worse(a: ActionName, b: ActionName) -> ActionName:
    return a if SEVERITY[a] >= SEVERITY[b] else b


@dataclass(frozen=True)
class Check:
    """One text checked in one direction: the pipeline's verdict and the policy's outcome."""

    direction: DirectionName
    text: str
    verdict: Verdict
    action: ActionName
    categories: tuple[str, ...]


class Guard:
    """Applies policies with one pipeline (and its cheap stages for streams)."""

    def __init__(self, pipeline: Pipeline, *, lookback: int = LOOKBACK_CHARS) -> None:
        self.pipeline = pipeline
        self.cheap = cheap(pipeline)
        # The stages too dear to run per chunk (the classifier): batched by the caller.
        self.dear = [c for c in pipeline.checkers if c.cost > CHEAP_COST]
        self.lookback = lookback
        # (id(policy), direction) → may_block; policies live as long as the snapshot
        # that holds them and this guard.
        self._may_block: dict[tuple[int, str], bool] = {}

    def check(
        self,
        text: str,
        policy: Policy,
        direction: DirectionName,
        *,
        only_cheap: bool = False,
        given: Mapping[str, CheckResult] | None = None,
    ) -> Check:
        """``text`` through the pipeline, stopping early once a block is certain;
        ``given``: the dear stages' results when they were had already (batched)."""
        pipeline = self.cheap if only_cheap else self.pipeline
        verdict = pipeline.run(text, decide=policy.certain(direction), given=given)
        outcome = policy.outcome(direction, verdict.scores)
        return Check(direction, text, verdict, outcome.action, outcome.categories)

    def complete(self, check: Check, results: Iterable[CheckResult], policy: Policy) -> Check:
        """A cheap-stages ``check`` with the dear stages' ``results`` merged in."""
        verdict = self.pipeline.extend(check.verdict, results)
        outcome = policy.outcome(check.direction, verdict.scores)
        return Check(check.direction, check.text, verdict, outcome.action, outcome.categories)

    def judged(
        self, text: str, direction: DirectionName, results: Iterable[CheckResult], policy: Policy
    ) -> Check:
        """A check of ``text`` by the dear stages' ``results`` alone (its cheap stages
        were run elsewhere, e.g. on a stream's chunks)."""
        empty = Check(direction, text, Verdict({}, [], [], False, {}), "allow", ())
        return self.complete(empty, results, policy)

    def may_block(self, policy: Policy, direction: DirectionName) -> bool:
        """Whether a stage dearer than the cheap ones could make ``policy`` block: one
        whose categories are unknown, or one of whose categories the policy blocks."""
        key = (id(policy), direction)
        known = self._may_block.get(key)
        if known is None:
            known = False
            for checker in self.pipeline.checkers:
                if checker.cost <= CHEAP_COST:
                    continue
                categories = emits(checker)
                if (
                    categories is None
                    or policy.outcome(direction, dict.fromkeys(categories, 1.0)).action == "block"
                ):
                    known = True
            self._may_block[key] = known
        return known

    def stream(
        self,
        policy: Policy,
        kind: str,
        trailer: Callable[[StreamFilter], bytes] | None = None,
    ) -> StreamFilter:
        return StreamFilter(self.cheap, policy, kind, self.lookback, trailer)


def emits(checker: object) -> list[str] | None:
    """The categories a checker can score, when it says (the classifier's model does)."""
    categories = getattr(getattr(checker, "model", None), "categories", None)
    return list(categories) if isinstance(categories, list) else None


def redact_spans(spans: Iterable[Span], scores: Mapping[str, float], policy: Policy) -> list[Span]:
    """The spans whose category the policy redacts in output (at its threshold)."""
    chosen = []
    for span in spans:
        rule = policy.rule(span.category, "output")
        if (
            rule is not None
            and rule.action == "redact"
            and scores.get(span.category, 0) >= (rule.threshold)
        ):
            chosen.append(span)
    return chosen


def mask(text: str, spans: Iterable[Span], offset: int = 0) -> str:
    """``text`` with the characters of ``spans`` (positions minus ``offset``) masked."""
    chars = list(text)
    for span in spans:
        for at in range(max(span.start - offset, 0), min(span.end - offset, len(chars))):
            chars[at] = MASK
    return "".join(chars)


def explicit(text: str, policy: Policy) -> str:
    """``text`` with the policy's explicit label at its start or end (or unchanged)."""
    place, label = policy.labels.get("explicit", "none"), policy.labels.get("text", "")
    if place == "start":
        return f"{label}\n{text}"
    if place == "end":
        return f"{text}\n{label}"
    return text


def filter_answer(
    answer: dict[str, Any],
    kind: str,
    guard: Guard,
    policy: Policy,
    dear: Mapping[str, Mapping[str, CheckResult]] | None = None,
) -> tuple[ActionName, list[Check]]:
    """Check every choice of a non-streamed answer in place: a blocked one gets
    :data:`NOTICE` and ``finish_reason: "content_filter"``, redacted spans are masked, the
    policy's explicit label is added. Returns the most severe action and the checks.
    ``dear``: text → the dear stages' results by checker, when they ran already
    (batched): then only the cheap stages run here; a text missing from it gets only
    the cheap stages too (the caller left the dear ones for later)."""
    action: ActionName = "allow"
    checks: list[Check] = []
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        holder, key = _text_slot(choice, kind)
        text = holder.get(key) if holder is not None else None
        if not isinstance(text, str) or holder is None:
            continue
        if dear is None:
            check = guard.check(text, policy, "output")
        else:
            given = dear.get(text)
            check = guard.check(text, policy, "output", only_cheap=given is None, given=given)
        checks.append(check)
        action = worse(action, check.action)
        if check.action == "block":
            holder[key] = NOTICE
            choice["finish_reason"] = "content_filter"
            continue
        if check.action == "redact":
            text = mask(text, redact_spans(check.verdict.spans, check.verdict.scores, policy))
        holder[key] = explicit(text, policy)
    return action, checks


def _text_slot(choice: dict[str, Any], kind: str) -> tuple[dict[str, Any] | None, str]:
    if kind == "chat":
        message = choice.get("message")
        return (message, "content") if isinstance(message, dict) else (None, "")
    return choice, "text"


@dataclass(slots=True)
class _Event:
    """One SSE event, or a run of plain events of one lane (``block``), held until it
    may be sent."""

    raw: bytes
    data: dict[str, Any] | None = None
    parts: dict[int, str] = field(default_factory=dict)  # choice index → content
    dirty: bool = False  # content changed: serialise ``data`` again
    # A run of plain events (read at once, see StreamFilter._run): each one's content
    # literal as sent and decoded. ``raw`` is the run, separators included.
    block: tuple[list[bytes], list[str]] | None = None


@dataclass(slots=True)
class _Lane:
    """One choice index of a streamed answer."""

    sent: list[str] = field(default_factory=list)
    held: int = 0  # characters held back in queued (checked, unsent) events
    started: bool = False
    finished: bool = False


class StreamFilter:
    """Filters an SSE answer event by event (see the module docstring).

    :meth:`feed` takes whole events (as ``StreamTap`` yields them) and returns the bytes
    to send; :meth:`close` the rest when the upstream ends. After a block, ``blocked`` is
    True and everything the upstream sends is dropped (the caller may stop reading).
    ``action``, ``categories``, ``scores`` and ``spans`` sum up what the chunks' checks
    found; :meth:`text` is what a lane sent.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        policy: Policy,
        kind: str,
        lookback: int = LOOKBACK_CHARS,
        trailer: Callable[[StreamFilter], bytes] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.kind = kind
        self.lookback = lookback
        self.trailer = trailer
        self.hold = any(
            per.get("output") is not None and per["output"].action == "redact"
            for per in policy.rules.values()
        )
        self.place = policy.labels.get("explicit", "none")
        self.label = policy.labels.get("text", "")
        self._text = _CHAT_TEXT if kind == "chat" else _COMPLETION_TEXT
        self.lanes: dict[int, _Lane] = {}
        self.queue: deque[_Event] = deque()  # checked, not sent yet
        # The bytes around the content of a plain event of one lane, learnt from the
        # first one: (index, before, after). Engines repeat them exactly (same id,
        # created, model), so later events are read with two byte comparisons.
        self.shape: tuple[int, bytes, bytes] | None = None
        # Once the shape is known: a run of such events (``_run``) and one event of it
        # with its content literal as the group (``_literal``).
        self._run: re.Pattern[bytes] | None = None
        self._literal: re.Pattern[bytes] | None = None
        self.unchecked: list[_Event] = []
        self.waiting = 0  # characters in ``unchecked``
        self.check_every = max(lookback // 2, 1)
        self.template: dict[str, Any] = {}
        self.action: ActionName = "allow"
        self.categories: set[str] = set()
        self.scores: dict[str, float] = {}
        self.spans: list[Span] = []
        self.blocked = False
        self.done = False
        # The usage chunk (no choices) goes out last, after the label's chunk, as OpenAI
        # sends it: clients read usage from the final chunk.
        self.usage: list[bytes] = []

    def text(self, index: int = 0) -> str:
        lane = self.lanes.get(index)
        return "".join(lane.sent) if lane else ""

    def feed(self, events: bytes) -> bytes:
        """The bytes to send for these whole events. New content is checked in batches,
        one window per lane: what arrived together at once, and while text is held back
        anyway (a redacting policy), until ``lookback // 2`` new characters are waiting,
        so a fast upstream costs a few checks per answer rather than one per token."""
        if self.blocked or self.done or not events:
            return b""
        finished = False
        unchecked, parse, waiting = self.unchecked, self._parse, self.waiting
        at, size = 0, len(events)
        while at < size:
            if self._run is not None:
                run = self._run.match(events, at)
                # (A run of one event is read faster by the single-event path.)
                if run is not None and events.find(b"\n\n", at) + 2 < run.end():
                    event = self._block(run.group())
                    at = run.end()
                    unchecked.append(event)
                    for part in event.parts.values():
                        waiting += len(part)
                    continue
            end = events.find(b"\n\n", at)
            end = size if end < 0 else end
            raw, at = events[at:end], end + 2
            if not raw:
                continue
            if raw.endswith(b"[DONE]") and self._is_done(raw):
                finished = True
                break
            if b'"usage"' in raw and _USAGE_ONLY.search(raw):
                self.usage.append(raw + b"\n\n")
                continue
            event = parse(raw)
            unchecked.append(event)
            for part in event.parts.values():
                waiting += len(part)
        self.waiting = waiting
        if self.hold and not finished and self.waiting < self.check_every:
            return b""
        if not self._check_waiting():
            return self._end_blocked()
        if not finished:
            return self._release()
        out = [self._flush()]
        if self.trailer is not None:
            out.append(self.trailer(self))
        out.extend(self.usage)
        out.append(b"data: [DONE]\n\n")
        self.done = True
        return b"".join(out)

    def close(self, rest: bytes) -> bytes:
        """The upstream ended: what is left (a stream cut short keeps its held text)."""
        out = self.feed(rest + b"\n\n") if rest.strip() else b""
        if self.blocked or self.done:
            return out
        if not self._check_waiting():
            return out + self._end_blocked()
        return out + self._flush() + b"".join(self.usage)

    def _check_waiting(self) -> bool:
        """Check the events not checked yet and queue them; False when blocked."""
        batch, self.unchecked, self.waiting = self.unchecked, [], 0
        if batch and not self._admit(batch):
            return False
        self.queue.extend(batch)
        for event in batch:
            for index, part in event.parts.items():
                self.lanes[index].held += len(part)
        return True

    # -- events -----------------------------------------------------------------

    @staticmethod
    def _is_done(raw: bytes) -> bool:
        return raw.strip() in (b"data: [DONE]", b"data:[DONE]")

    def _parse(self, raw: bytes) -> _Event:
        """The event's content per lane. The common event (one ``data:`` line, one
        choice of a lane already started, no finish) is read with byte comparisons
        against the learnt :attr:`shape`, else byte searches, and only its content string
        decoded; anything else is parsed whole."""
        shape = self.shape
        if shape is not None and raw.startswith(shape[1]) and raw.endswith(shape[2]):
            literal = raw[len(shape[1]) : len(raw) - len(shape[2])].decode()
            try:
                content, end = _scanstring(literal, 1)
            except ValueError:
                end = -1
            if end == len(literal) and literal.startswith('"'):
                return _Event(raw, None, {shape[0]: content} if content else {})
        if (
            self.template
            and raw.startswith(b"data:")
            and raw.count(b'"index"') == 1
            and b"\n" not in raw
            and not _FINISHED.search(raw)
        ):
            found = _INDEX.search(raw)
            index = int(found.group(1)) if found else -1
            lane = self.lanes.get(index)
            if lane is not None and (lane.started or self.place != "start"):
                event = _Event(raw)
                text = self._text.search(raw)
                if text is not None:
                    content = _scanstring(text.group(1).decode(), 1)[0]
                    if content:
                        lane.started = True
                        event.parts[index] = content
                        start, end = text.span(1)
                        self._learn(index, raw[:start], raw[end:])
                return event
        return self._parse_full(raw)

    def _learn(self, index: int, before: bytes, after: bytes) -> None:
        self.shape = (index, before, after)
        one = re.escape(before) + _LITERAL + re.escape(after) + b"\n\n"
        self._run = re.compile(b"(?:" + one + b")+")
        self._literal = re.compile(re.escape(before) + b"(" + _LITERAL + b")" + re.escape(after))

    def _block(self, run: bytes) -> _Event:
        """A run of plain events matched by ``_run`` as one event: its content literals
        found in one pass and decoded as one JSON array."""
        assert self._literal is not None and self.shape is not None
        literals = self._literal.findall(run)
        texts: list[str] = json.loads(b"[" + b",".join(literals) + b"]")
        content = "".join(texts)
        return _Event(
            run, None, {self.shape[0]: content} if content else {}, block=(literals, texts)
        )

    def _explode(self, events: Iterable[_Event]) -> list[_Event]:
        """``events`` with each block replaced by its events, one by one (to be masked)."""
        out: list[_Event] = []
        for event in events:
            if event.block is None:
                out.append(event)
                continue
            assert self.shape is not None
            index, before, after = self.shape
            for literal, text in zip(*event.block, strict=True):
                out.append(_Event(before + literal + after, None, {index: text} if text else {}))
        return out

    def _split(self, event: _Event, count: int) -> tuple[_Event, _Event]:
        """A block's first ``count`` events and the rest, as two blocks."""
        assert event.block is not None and self.shape is not None
        index, before, after = self.shape
        literals, texts = event.block
        cut = sum(len(literal) for literal in literals[:count])
        cut += count * (len(before) + len(after) + 2)
        pieces = []
        for lits, txts, raw in (
            (literals[:count], texts[:count], event.raw[:cut]),
            (literals[count:], texts[count:], event.raw[cut:]),
        ):
            content = "".join(txts)
            pieces.append(
                _Event(raw, None, {index: content} if content else {}, block=(lits, txts))
            )
        return pieces[0], pieces[1]

    def _parse_full(self, raw: bytes) -> _Event:
        event = _Event(raw)
        line = next((x for x in raw.split(b"\n") if x.startswith(b"data:")), None)
        if line is None:
            return event
        try:
            data = json.loads(line[5:])
        except ValueError:
            return event
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            return event
        event.data = data
        if not self.template:
            self.template = {k: data[k] for k in ("id", "object", "created", "model") if k in data}
        for choice in data["choices"]:
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                continue
            index = choice.get("index", 0)
            holder, key = self._slot(choice)
            content = holder.get(key) if holder is not None else None
            lane = self.lanes.setdefault(index, _Lane())
            if isinstance(content, str) and content:
                if self.place == "start" and not lane.started:
                    assert holder is not None
                    holder[key] = content = f"{self.label}\n{content}"
                    event.dirty = True
                lane.started = True
                event.parts[index] = content
            if choice.get("finish_reason") is not None:
                lane.finished = True
                if self.place == "end" and holder is not None:
                    holder[key] = f"{content or ''}\n{self.label}"
                    event.parts[index] = holder[key]
                    event.dirty = True
        return event

    def _slot(self, choice: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        if self.kind == "chat":
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = choice["delta"] = {}
            return delta, "content"
        return choice, "text"

    def _admit(self, batch: list[_Event]) -> bool:
        """Check the batch's new content in its lanes' windows; False when blocked."""
        for index in {i for event in batch for i in event.parts}:
            lane = self.lanes[index]
            held = self._held_text(index)
            keep = max(self.lookback - len(held), 0)
            prefix = (_tail(lane.sent, keep) if keep else "") + held
            window = prefix + "".join(e.parts[index] for e in batch if index in e.parts)
            verdict = self.pipeline.run(window)
            fresh = [s for s in verdict.spans if s.end > len(prefix)]
            if not fresh:
                continue
            scores = _span_scores(fresh, verdict)
            outcome = self.policy.outcome("output", scores)
            if outcome.action == "allow":
                continue
            self._note(outcome.action, outcome.categories, scores, fresh)
            if outcome.action == "block":
                self.blocked = True
                return False
            if outcome.action == "redact":
                chosen = redact_spans(fresh, scores, self.policy)
                batch[:] = self._explode(batch)
                self.queue = deque(self._explode(self.queue))
                self._mask(index, batch, chosen, len(prefix) - len(held))
        return True

    def _note(
        self,
        action: ActionName,
        categories: Iterable[str],
        scores: Mapping[str, float],
        spans: list[Span],
    ) -> None:
        self.action = worse(self.action, action)
        self.categories.update(categories)
        for code, score in scores.items():
            self.scores[code] = max(self.scores.get(code, 0.0), score)
        self.spans.extend(spans)

    def _held_text(self, index: int) -> str:
        return "".join(e.parts[index] for e in self.queue if index in e.parts)

    def _mask(self, index: int, batch: list[_Event], spans: list[Span], start: int) -> None:
        """Mask ``spans`` (window positions; the held text begins at ``start``) in the
        held and the new events of lane ``index``."""
        at = start
        for event in [*self.queue, *batch]:
            part = event.parts.get(index)
            if part is None:
                continue
            masked = mask(part, spans, at)
            if masked != part:
                event.parts[index] = masked
                self._set_content(event, index, masked)
            at += len(part)

    def _set_content(self, event: _Event, index: int, content: str) -> None:
        if event.data is None:  # read by the fast path: parse it now
            event.data = json.loads(event.raw[event.raw.index(b"{") :])
        assert event.data is not None
        for choice in event.data["choices"]:
            if isinstance(choice, dict) and choice.get("index", 0) == index:
                holder, key = self._slot(choice)
                if holder is not None:
                    holder[key] = content
        event.dirty = True

    def _release(self) -> bytes:
        """Send the events at the head of the queue that ``lookback`` characters follow
        in each of their lanes (all of them when nothing is redacted)."""
        if not self.hold:
            return self._flush()
        lookback = self.lookback
        after = {i: lane.held for i, lane in self.lanes.items()}
        ready = 0
        for event in self.queue:
            parts = event.parts
            if len(parts) == 1:  # the common event: one lane's delta
                ((i, part),) = parts.items()
                left = after[i] - len(part)
                if left < lookback:
                    if event.block is not None and self._split_at(ready, after[i] - lookback):
                        ready += 1  # the block's first events go
                    break
                after[i] = left
            elif parts:
                if any(after[i] - len(p) < lookback for i, p in parts.items()):
                    break
                for i, p in parts.items():
                    after[i] -= len(p)
            ready += 1
        return self._send_first(ready)

    def _split_at(self, at: int, spare: int) -> bool:
        """Split the block at ``queue[at]`` after its first events whose content is at
        most ``spare`` characters in all; False (and nothing split) when none fits."""
        event = self.queue[at]
        assert event.block is not None
        count = 0
        for text in event.block[1]:
            spare -= len(text)
            if spare < 0:
                break
            count += 1
        if count == 0:
            return False
        first, rest = self._split(event, count)
        self.queue[at] = first
        self.queue.insert(at + 1, rest)
        return True

    def _flush(self) -> bytes:
        return self._send_first(len(self.queue))

    def _send_first(self, count: int) -> bytes:
        """Send the first ``count`` queued events (as they came, or serialised again
        when their content changed)."""
        queue, lanes = self.queue, self.lanes
        out: list[bytes] = []
        for _ in range(count):
            event = queue.popleft()
            for index, part in event.parts.items():
                lane = lanes[index]
                lane.sent.append(part)
                lane.held -= len(part)
            if event.dirty and event.data is not None:
                out.append(b"data: " + _compact(event.data).encode() + b"\n\n")
            elif event.block is not None:
                out.append(event.raw)  # separators included
            else:
                out.append(event.raw + b"\n\n")
        return b"".join(out)

    def _end_blocked(self) -> bytes:
        """Drop what is held; a ``content_filter`` finish for every lane, then [DONE]."""
        self.queue.clear()
        slot = "delta" if self.kind == "chat" else "text"
        empty: Any = {} if self.kind == "chat" else ""
        choices = [
            {"index": i, slot: empty, "finish_reason": "content_filter"}
            for i in sorted(self.lanes or {0: _Lane()})
        ]
        final = {**self.template, "choices": choices}
        return b"data: " + _compact(final).encode() + b"\n\ndata: [DONE]\n\n"


def _tail(sent: list[str], size: int) -> str:
    """The last ``size`` characters of the parts ``sent``."""
    parts: list[str] = []
    have = 0
    for part in reversed(sent):
        parts.append(part)
        have += len(part)
        if have >= size:
            break
    return "".join(reversed(parts))[-size:]


def _span_scores(spans: list[Span], verdict: Verdict) -> dict[str, float]:
    """Category scores of ``spans`` (each at its checker's score for the category),
    detector categories also under their risk."""
    by_checker = {r.checker: r.scores for r in verdict.results}
    scores: dict[str, float] = {}
    for span in spans:
        score = by_checker.get(span.checker, {}).get(span.category, 1.0)
        scores[span.category] = max(scores.get(span.category, 0.0), score)
    return rollup(scores)


def decision_event(
    *,
    decision_id: str,
    ts: float,
    source: str,
    check: Check | None = None,
    direction: DirectionName,
    action: ActionName,
    categories: Iterable[str] = (),
    scores: Mapping[str, float] | None = None,
    spans: Iterable[Span] = (),
    text: str = "",
    text_sha256: str = "",
    excerpt_chars: int = 2000,
    more: Iterable[CheckResult] = (),
    **ids: Any,
) -> dict[str, Any]:
    """A ``decision`` event for the governance stream (see
    ``governance.services.events``); ``ids``: request_id, content_id, served_name,
    user_id, org_id, key_id, policy_id, policy_version, context, provenance. ``more``:
    further checker results to log (a stream's whole-answer check)."""
    results: list[dict[str, Any]] = []
    if check is not None:
        categories = check.categories
        scores = check.verdict.scores
        text = check.text
        results = [_result_row(r.checker, r.scores, r.spans) for r in check.verdict.results]
    elif spans:
        by: dict[str, list[Span]] = {}
        for s in spans:
            by.setdefault(s.checker, []).append(s)
        results = [_result_row(k, {}, v) for k, v in by.items()]
    results.extend(_result_row(r.checker, r.scores, r.spans) for r in more)
    return {
        "kind": "decision",
        "decision_id": decision_id,
        "ts": ts,
        "source": source,
        "direction": direction,
        "action": action,
        "categories": sorted(set(categories)),
        "scores": {k: round(v, 4) for k, v in (scores or {}).items()},
        "results": results,
        "excerpt": text[:excerpt_chars],
        "text_sha256": text_sha256,
        **ids,
    }


def _result_row(checker: str, scores: Mapping[str, float], spans: Iterable[Span]) -> dict[str, Any]:
    return {
        "checker": checker,
        "scores": dict(scores),
        "spans": [[s.start, s.end, s.category, s.term] for s in list(spans)[:50]],
    }
