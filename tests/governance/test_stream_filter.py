"""The stream filter alone (no gateway): however an answer's events are grouped into
reads, what it sends is the same — the text intact when clean, a personal number masked
before any digit of it is sent, the explicit label in place — and events whose bytes
differ from the learnt shape are read correctly."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from governance.inline import MASK, Guard
from governance.moderation.pipeline import default_pipeline
from governance.policy import build

GUARD = Guard(default_pipeline(classifier=False))
PHONE = "13912345678"


def event(content: str | None, *, finish: str | None = None, rid: str = "chatcmpl-1") -> bytes:
    delta = {} if content is None else {"content": content}
    data = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def answer_events(deltas: list[str]) -> list[bytes]:
    first = event(None)  # the role chunk engines send first
    last = event(None, finish="stop")
    return [first, *(event(d) for d in deltas), last, b"data: [DONE]\n\n"]


def run(events: list[bytes], groups: list[int], **policy: Any) -> str:
    """The text the client receives when ``events`` arrive in reads of ``groups``
    events each (the rest in one last read)."""
    filtered = GUARD.stream(build(**policy), "chat")
    out, at = [], 0
    for size in groups:
        out.append(filtered.feed(b"".join(events[at : at + size])))
        at += size
    out.append(filtered.feed(b"".join(events[at:])) if at < len(events) else b"")
    out.append(filtered.close(b""))
    sent = b"".join(out)
    assert sent.endswith(b"data: [DONE]\n\n")
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in sent.split(b"\n\n")[:-1])
    received = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for line in sent.decode().splitlines()
        if line.startswith("data: {")
        for c in [json.loads(line[6:])]
        if c.get("choices")
    )
    # What the filter read is what it sent (the label's digest and the classifier use it).
    assert filtered.text(0) == received
    return received


def chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(["天气", "很好", "the", " fox", "，", '"q"', "\\", "é"]), max_size=40
    ),
    cuts=st.lists(st.integers(0, 400), max_size=30),
    groups=st.lists(st.integers(1, 8), max_size=20),
)
def test_a_clean_answer_arrives_intact_however_its_events_are_grouped(words, cuts, groups):
    text = "".join(words)
    assert run(answer_events(chunks(text, cuts)), groups) == text


@settings(max_examples=60, deadline=None)
@given(
    before=st.text(alphabet="好的，请联系 abc", max_size=80),
    after=st.text(alphabet="谢谢。 xyz", max_size=80),
    cuts=st.lists(st.integers(0, 300), max_size=30),
    groups=st.lists(st.integers(1, 6), max_size=20),
)
def test_a_phone_number_is_masked_before_any_digit_is_sent_however_it_is_split(
    before, after, cuts, groups
):
    text = f"{before} {PHONE} {after}"
    got = run(answer_events(chunks(text, cuts)), groups)
    assert got == text.replace(PHONE, MASK * len(PHONE))
    assert not re.search(r"\d", got)


def test_events_that_differ_from_the_learnt_shape_are_read_in_full():
    # Escapes after the shape is learnt (from the second event), a second request id
    # mid-stream, and an empty delta between contents.
    events = [
        event("你"),
        event("好"),
        event(', "x" \\ \u00e9'),
        event("", rid="other"),
        event("再见", rid="other"),
        event(None, finish="stop"),
        b"data: [DONE]\n\n",
    ]
    for groups in ([1] * 7, [7], [2, 3]):
        assert run(events, groups) == '你好, "x" \\ é再见'


def test_the_explicit_label_is_placed_once_at_the_start_and_at_the_end():
    deltas = ["The ", "quick ", "fox."]
    for groups in ([1] * 6, [6]):
        start = run(answer_events(deltas), groups, labels={"explicit": "start"})
        end = run(answer_events(deltas), groups, labels={"explicit": "end"})
        assert start == "人工智能生成\nThe quick fox."
        assert end == "The quick fox.\n人工智能生成"


def sent_text(sent: bytes) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for raw in sent.split(b"\n\n")
        if raw.startswith(b"data: {")
        for c in [json.loads(raw[6:])]
        if c.get("choices")
    )


def test_a_read_of_many_events_sends_all_but_the_held_back_tail_at_once():
    # Read together, plain events are handled as one run; those that the look-back
    # window no longer needs are sent at once, not when the next read comes.
    filtered = GUARD.stream(build(), "chat")
    deltas = [f"w{n:02d} " for n in range(40)]  # 160 characters
    first = filtered.feed(b"".join(answer_events(deltas)[:-2]))
    assert sent_text(first) == "".join(deltas[:24])  # 64 characters stay held
    rest = filtered.feed(b"".join(answer_events(deltas)[-2:]))
    assert sent_text(first + rest) == "".join(deltas)


def test_a_number_begun_in_held_events_of_an_earlier_read_is_masked_there_too():
    # The first read is checked (enough text) and held (not enough after it): its
    # events hold the number's first digits when its last ones arrive.
    lead = "这是一段足够长的前文，用来让过滤器先检查并扣住这一批内容。电话 "
    first = answer_events([lead, "139", "12"])[:-2]
    second = answer_events(["345", "678", "，谢谢。"])[1:]
    filtered = GUARD.stream(build(), "chat")
    sent = filtered.feed(b"".join(first)) + filtered.feed(b"".join(second))
    assert sent_text(sent) == f"{lead}{MASK * len(PHONE)}，谢谢。"
