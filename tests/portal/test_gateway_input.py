"""The /v1 gateway's validation over real HTTP: hostile bodies are 400s in OpenAI's shape
(never a 5xx), and OpenAI's own parameter forms pass through to routing.

With no ready replica, a body that passes validation is answered 503 ``no_replica_ready``;
that is how these tests tell "accepted" from "refused"."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from portal.gateway.validation import MAX_CHOICES, MAX_PROMPTS
from tests.factories import deployment

MESSAGES = [{"role": "user", "content": "你好"}]
CHAT = {"model": "olivia/pub", "messages": MESSAGES}
COMPLETION = {"model": "olivia/pub", "prompt": "hi"}


@pytest.fixture
def served(owner):
    return deployment(owner.user, "pub")


def post(
    url: str, key: str, path: str, body: Any = None, raw: bytes | None = None
) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(
        f"{url}{path}",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param


def assert_accepted(response: httpx.Response) -> None:
    assert_error(response, 503)
    assert response.json()["error"]["code"] == "no_replica_ready"


def test_deeply_nested_body_is_400_not_502(live_portal, served, owner):
    nested = b"[" * 100_000 + b"]" * 100_000
    for path in ["/v1/chat/completions", "/v1/completions"]:
        assert_error(post(live_portal, owner.key, path, raw=nested), 400)
        raw = b'{"model": "olivia/pub", "messages": ' + nested + b"}"
        assert_error(post(live_portal, owner.key, path, raw=raw), 400)


BAD_PARAMETERS = [
    ({"seed": 18446744073709551616}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"max_tokens": 2**63}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"n": 10**30}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": "yes"}, "stream_options"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)],
)
def test_out_of_range_or_mistyped_parameters_are_400(live_portal, served, owner, path, body):
    for override, param in BAD_PARAMETERS:
        assert_error(post(live_portal, owner.key, path, {**body, **override}), 400, param)


SURROGATES = [
    b'{"model": "olivia/pub", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "olivia/pub", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
    b'{"model": "olivia/pub", "messages": [{"role": "user", "content": "x"}], "u\\udc00": 1}',
]


def test_lone_surrogate_is_400(live_portal, served, owner):
    for raw in SURROGATES:
        assert_error(post(live_portal, owner.key, "/v1/chat/completions", raw=raw), 400)


def test_surrogate_pair_is_accepted(live_portal, served, owner):
    raw = b'{"model": "olivia/pub", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    assert_accepted(post(live_portal, owner.key, "/v1/chat/completions", raw=raw))


OPENAI_FORMS = [
    {"logprobs": True, "top_logprobs": 2},
    {"logprobs": False},
    {"stream": None},
    {"stream": False, "stream_options": {"include_usage": True}},
    {"stream_options": None, "seed": None, "temperature": None, "max_tokens": None},
    {"seed": 2**63 - 1},
    {"seed": -(2**63)},
]


def test_openai_forms_of_chat_parameters_are_accepted(live_portal, served, owner):
    for override in OPENAI_FORMS:
        assert_accepted(post(live_portal, owner.key, "/v1/chat/completions", {**CHAT, **override}))


def test_chat_logprobs_must_be_boolean_and_completion_logprobs_integer(live_portal, served, owner):
    chat = post(live_portal, owner.key, "/v1/chat/completions", {**CHAT, "logprobs": 2})
    assert_error(chat, 400, "logprobs")
    completion = post(live_portal, owner.key, "/v1/completions", {**COMPLETION, "logprobs": True})
    assert_error(completion, 400, "logprobs")
    assert_accepted(post(live_portal, owner.key, "/v1/completions", {**COMPLETION, "logprobs": 2}))


def test_completion_prompt_array_is_capped(live_portal, served, owner):
    at_cap = {**COMPLETION, "prompt": ["a"] * MAX_PROMPTS}
    assert_accepted(post(live_portal, owner.key, "/v1/completions", at_cap))
    over = {**COMPLETION, "prompt": ["a"] * (MAX_PROMPTS + 1)}
    assert_error(post(live_portal, owner.key, "/v1/completions", over), 400, "prompt")
    tokens = {**COMPLETION, "prompt": [[1, 2]] * (MAX_PROMPTS + 1)}
    assert_error(post(live_portal, owner.key, "/v1/completions", tokens), 400, "prompt")
    many = {**COMPLETION, "prompt": ["a"] * 2, "n": MAX_CHOICES // 2 + 1}
    assert_error(post(live_portal, owner.key, "/v1/completions", many), 400, "n")
    single_token_prompt = {**COMPLETION, "prompt": list(range(MAX_PROMPTS + 5))}
    assert_accepted(post(live_portal, owner.key, "/v1/completions", single_token_prompt))
