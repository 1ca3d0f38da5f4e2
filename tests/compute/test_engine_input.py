"""The CPU engine answers hostile or unusual bodies with a 400 in OpenAI's shape (never a
500), accepts OpenAI's nullable parameters, and stops generating for a client that hung
up on a non-streamed request. Driven over HTTP against the real engine subprocess."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from compute.engines.transformers.parsing import MAX_PROMPTS
from tests.compute.conftest import ENGINE_API_KEY, SERVED_NAME
from tests.compute.hang_up import LONG, abandon_and_measure

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CHAT = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_400(resp: httpx.Response, param: str | None = None) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1])
def test_out_of_range_seed_is_400(client: httpx.Client, path: str, seed: int) -> None:
    body: dict[str, Any] = {"model": SERVED_NAME, "seed": seed, "max_tokens": 2}
    body.update({"prompt": "hi"} if path == "/v1/completions" else CHAT)
    body["seed"] = seed
    assert_400(client.post(path, json=body), "seed")


def test_int64_seed_is_accepted(client: httpx.Client) -> None:
    resp = client.post("/v1/chat/completions", json={**CHAT, "seed": 2**63 - 1})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "tiny-llama", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "tiny-llama", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        b'{"model": "tiny-llama", "prompt": "a\\udfffb"}',
    ],
    ids=["escaped-surrogate", "encoded-surrogate", "completion-surrogate"],
)
def test_lone_surrogate_is_400(client: httpx.Client, raw: bytes) -> None:
    path = "/v1/completions" if b"prompt" in raw else "/v1/chat/completions"
    assert_400(client.post(path, content=raw, headers={"Content-Type": "application/json"}))


def test_surrogate_pair_is_a_character(client: httpx.Client) -> None:
    raw = b'{"model": "tiny-llama", "max_tokens": 2, "messages": [{"role": "user", '
    raw += b'"content": "\\ud83d\\ude00"}]}'
    resp = client.post("/v1/chat/completions", content=raw)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_deeply_nested_body_is_400(client: httpx.Client, path: str) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    assert_400(client.post(path, content=raw, headers={"Content-Type": "application/json"}))


def test_null_optional_parameters_mean_absent(client: httpx.Client) -> None:
    nulls = dict.fromkeys(
        ["stream", "stream_options", "temperature", "top_p", "seed", "stop", "n", "logprobs"]
    )
    resp = client.post("/v1/chat/completions", json={**CHAT, **nulls, "top_logprobs": None})
    assert resp.status_code == 200, resp.text
    assert resp.json()["object"] == "chat.completion"


def test_prompt_array_is_capped(client: httpx.Client) -> None:
    body = {"model": SERVED_NAME, "max_tokens": 1, "prompt": ["a"] * (MAX_PROMPTS + 1)}
    assert_400(client.post("/v1/completions", json=body), "prompt")


def test_client_hanging_up_on_a_non_streamed_request_stops_its_generation(
    client: httpx.Client, engine_url: str
) -> None:
    body = {**LONG, "_authorization": f"Bearer {ENGINE_API_KEY}"}
    measured = abandon_and_measure(client, engine_url, "/v1/chat/completions", body)
    assert measured["finished"] == 1
    assert measured["generated"] < LONG["max_tokens"]
