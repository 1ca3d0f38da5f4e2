"""The evaluator's OpenAI-compatible client against the real CPU engine (log-likelihoods
checked against transformers on the same tiny model) and against a small real HTTP server
that answers badly on purpose (the endpoint under test, so it is a stand-in endpoint)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compute.agent.procs import free_port
from evaluation.harness.client import EndpointError, OpenAIClient
from evaluation.harness.requests import (
    GenerationRequest,
    LoglikelihoodRequest,
    RollingRequest,
)
from tests.compute.conftest import (
    ENGINE_API_KEY,
    SERVED_NAME,
    EngineProcess,
)
from tests.evaluation.conftest import Reply, StandInEndpoint

PAIRS = [
    ("The quick brown fox", " jumps over the lazy dog."),
    ("Hello, world!", " How are you doing today?"),
    ("你好，", "世界！很高兴见到你。"),
    ("Numbers like 42,", " 3.14 and 1000"),
    ("Question: what is it?\nAnswer:", " sunny"),
]


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> tuple[Any, Any]:
    """The same tiny model loaded directly with transformers: ``(model, tokenizer)``."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def direct_loglikelihood(
    reference: tuple[Any, Any], context: str, continuation: str
) -> tuple[float, bool, int]:
    """lm-eval's way with a local model: the continuation's tokens are those of
    ``context + continuation`` after the context's own tokens."""
    model, tokenizer = reference
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    assert whole[: len(context_ids)] == context_ids, "pair does not split at a token boundary"
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    positions = range(len(context_ids), len(whole))
    total = sum(float(logprobs[p - 1, whole[p]]) for p in positions)
    greedy = all(int(logprobs[p - 1].argmax()) == whole[p] for p in positions)
    return total, greedy, len(positions)


def greedy_pair(reference: tuple[Any, Any], context: str) -> tuple[str, str]:
    """``(context, continuation)`` where the continuation is the model's own greedy choice
    (the longest of up to 3 tokens that tokenizes back to the same tokens)."""
    model, tokenizer = reference
    ids = tokenizer(context)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False)
    for steps in (3, 2, 1):
        new = out[0, len(ids) : len(ids) + steps].tolist()
        text = tokenizer.decode(new)
        if tokenizer(context + text)["input_ids"] == ids + new:
            return context, text
    raise AssertionError(f"no greedy continuation of {context!r} survives tokenization")


def engine_client(engine: EngineProcess, **options: Any) -> OpenAIClient:
    return OpenAIClient(engine.base_url, ENGINE_API_KEY, SERVED_NAME, **options)


def test_loglikelihood_matches_transformers_on_the_same_model(
    engine: EngineProcess, reference: tuple[Any, Any]
) -> None:
    # given pairs in English and Chinese, and one whose continuation is the greedy choice
    pairs = [*PAIRS, greedy_pair(reference, "A model serves tokens to")]
    expected = [direct_loglikelihood(reference, c, x) for c, x in pairs]
    assert expected[-1][1] is True and not all(greedy for _, greedy, _ in expected)

    # when the client scores them in one batch
    results = asyncio.run(
        engine_client(engine).loglikelihood([LoglikelihoodRequest(c, x) for c, x in pairs])
    )

    # then the sums, token counts and greediness agree with transformers
    for result, (logprob, greedy, tokens) in zip(results, expected, strict=True):
        assert result.logprob == pytest.approx(logprob, abs=1e-4)
        assert result.is_greedy is greedy
        assert result.tokens == tokens


def test_batched_and_one_by_one_scores_are_identical(engine: EngineProcess) -> None:
    requests = [LoglikelihoodRequest(c, x) for c, x in PAIRS]

    async def both() -> tuple[list[Any], list[Any]]:
        async with (
            engine_client(engine, batch_size=16) as batched,
            engine_client(engine, batch_size=1, concurrency=1) as single,
        ):
            return await batched.loglikelihood(requests), await single.loglikelihood(requests)

    batched, single = asyncio.run(both())

    assert [r.tokens for r in batched] == [r.tokens for r in single]
    assert [r.is_greedy for r in batched] == [r.is_greedy for r in single]
    # the engine pads a batch, which moves float32 sums in the 7th digit at most
    assert [r.logprob for r in batched] == pytest.approx([r.logprob for r in single], abs=1e-5)


def test_context_trailing_space_moves_into_the_continuation(
    engine: EngineProcess, reference: tuple[Any, Any]
) -> None:
    # given a context ending in a space, which tokenizers attach to the next word
    client = engine_client(engine)

    result = asyncio.run(client.loglikelihood([LoglikelihoodRequest("The quick brown ", "fox")]))[0]

    logprob, _, tokens = direct_loglikelihood(reference, "The quick brown", " fox")
    assert result.logprob == pytest.approx(logprob, abs=1e-4)
    assert result.tokens == tokens


def test_rolling_loglikelihood_sums_every_token_after_the_first(
    engine: EngineProcess, reference: tuple[Any, Any]
) -> None:
    model, tokenizer = reference
    text = "Batching requests together makes inference much faster."
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    expected = sum(float(logprobs[p - 1, ids[p]]) for p in range(1, len(ids)))

    result = asyncio.run(engine_client(engine).rolling([RollingRequest(text)]))[0]

    assert result.tokens == len(ids) - 1
    assert result.logprob == pytest.approx(expected, abs=1e-4)


def test_generation_stops_before_the_first_stop_string(engine: EngineProcess) -> None:
    client = engine_client(engine)
    free = GenerationRequest("The weather today is", None, 24, (), 0.0, None)
    text = asyncio.run(client.generate([free]))[0].text
    start = next(k for k in range(1, len(text) - 1) if text.find(text[k : k + 2]) == k)
    stop = text[start : start + 2]

    result = asyncio.run(
        client.generate([GenerationRequest("The weather today is", None, 24, (stop,), 0.0, None)])
    )[0]

    assert result.text == text[:start]
    assert result.finish_reason == "stop"


def test_chat_generation_uses_the_messages(engine: EngineProcess) -> None:
    request = GenerationRequest("", [{"role": "user", "content": "你好"}], 5, (), 0.0, 7)

    result = asyncio.run(engine_client(engine).generate([request]))[0]

    assert isinstance(result.text, str)
    assert result.finish_reason in ("length", "stop")


def test_wrong_key_is_an_endpoint_error_naming_the_key(engine: EngineProcess) -> None:
    client = OpenAIClient(engine.base_url, "not-the-key", SERVED_NAME)

    with pytest.raises(EndpointError) as caught:
        asyncio.run(client.loglikelihood([LoglikelihoodRequest("a", " b")]))

    assert caught.value.code == "endpoint_error"
    assert "refused the API key (401)" in caught.value.message


def test_unknown_model_is_an_endpoint_error_naming_the_model(engine: EngineProcess) -> None:
    client = OpenAIClient(engine.base_url + "/v1", ENGINE_API_KEY, "no-such-model")

    with pytest.raises(EndpointError) as caught:
        asyncio.run(client.generate([GenerationRequest("a", None, 2, (), 0.0, None)]))

    assert caught.value.code == "endpoint_error"
    assert "does not serve model 'no-such-model'" in caught.value.message


def test_closed_port_is_unreachable_quickly() -> None:
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}", "k", "m", max_retries=3)
    started = time.monotonic()

    with pytest.raises(EndpointError) as caught:
        asyncio.run(client.loglikelihood([LoglikelihoodRequest("a", " b")]))

    assert caught.value.code == "endpoint_unreachable"
    assert "after 4 attempt(s)" in caught.value.message
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    "url", ["ftp://host/v1", "not a url", "http://127.0.0.1:99999", "http://[::1"]
)
def test_a_url_that_is_no_http_endpoint_is_refused_up_front(url: str) -> None:
    with pytest.raises(EndpointError) as caught:
        OpenAIClient(url, "k", "m")

    assert caught.value.code == "endpoint_unreachable"
    assert "invalid endpoint URL" in caught.value.message


# -- a small real HTTP endpoint that answers as each test tells it ---------------------


def echo_answer(prompts: list[str], generated: int = 0) -> dict[str, Any]:
    """A well-formed echo answer: one token per character, logprob -1 each, top-1 itself."""
    choices = []
    for index, prompt in enumerate(prompts):
        text = prompt + "x" * generated
        choices.append(
            {
                "index": index,
                "text": text,
                "logprobs": {
                    "tokens": list(text),
                    "token_logprobs": [None] + [-1.0] * (len(text) - 1),
                    "top_logprobs": [None] + [{ch: -1.0} for ch in text[1:]],
                    "text_offset": list(range(len(text))),
                },
            }
        )
    return {"choices": choices}


def score_one(endpoint: StandInEndpoint, **options: Any) -> Any:
    client = OpenAIClient(endpoint.url, "k", "m", backoff_s=0.01, **options)
    return asyncio.run(client.loglikelihood([LoglikelihoodRequest("ab", " cd")]))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"<html>oops</html>", "not JSON"),
        ({"choices": [{"index": 0, "text": "ab cd"}]}, "no 'logprobs'"),
        ({"choices": []}, "0 choices for 1 prompt"),
        ({"object": "text_completion"}, "no 'choices' list"),
        (
            {
                "choices": [
                    {"logprobs": {"token_logprobs": [None], "top_logprobs": [], "text_offset": [0]}}
                ]
            },
            "differ in length",
        ),
    ],
)
def test_malformed_answers_are_bad_responses(stand_in: Any, payload: Any, reason: str) -> None:
    endpoint = stand_in(lambda body: (200, payload))

    with pytest.raises(EndpointError) as caught:
        score_one(endpoint)

    assert caught.value.code == "bad_response"
    assert reason in caught.value.message


def test_401_from_an_endpoint_carries_its_message(stand_in: Any) -> None:
    error = {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
    endpoint = stand_in(lambda body: (401, error))

    with pytest.raises(EndpointError) as caught:
        score_one(endpoint)

    assert caught.value.code == "endpoint_error"
    assert caught.value.http_status == 401
    assert "refused the API key (401): Incorrect API key provided" in caught.value.message
    assert len(endpoint.bodies) == 1  # not retried


def test_server_errors_are_retried_then_reported(stand_in: Any) -> None:
    endpoint = stand_in(lambda body: (503, {"error": {"message": "overloaded"}}))

    with pytest.raises(EndpointError) as caught:
        score_one(endpoint, max_retries=2)

    assert len(endpoint.bodies) == 3
    assert "answered 503 after 3 attempt(s): overloaded" in caught.value.message


def test_a_transient_error_then_success_returns_the_scores(stand_in: Any) -> None:
    replies = iter([(429, {"error": {"message": "slow down"}})])
    endpoint = stand_in(lambda body: next(replies, (200, echo_answer(body["prompt"]))))

    result = score_one(endpoint)[0]

    assert len(endpoint.bodies) == 2
    assert (result.logprob, result.tokens, result.is_greedy) == (-3.0, 3, True)


def test_an_endpoint_refusing_zero_max_tokens_is_scored_with_one(stand_in: Any) -> None:
    def answer(body: dict[str, Any]) -> Reply:
        if body["max_tokens"] == 0:
            return 400, {"error": {"message": "max_tokens must be at least 1"}}
        return 200, echo_answer(body["prompt"], generated=1)

    endpoint = stand_in(answer)
    client = OpenAIClient(endpoint.url, "k", "m")

    async def twice() -> list[Any]:
        first = await client.loglikelihood([LoglikelihoodRequest("ab", " cd")])
        return first + await client.rolling([RollingRequest("abcd")])

    scored, rolled = asyncio.run(twice())

    # the generated token is not counted; the second call goes straight to max_tokens 1
    assert (scored.logprob, scored.tokens) == (-3.0, 3)
    assert (rolled.logprob, rolled.tokens) == (-3.0, 3)
    assert [b["max_tokens"] for b in endpoint.bodies] == [0, 1, 1]
