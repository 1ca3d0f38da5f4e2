"""The CPU engine, driven over HTTP as a real subprocess (plus a few in-process units)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch

from compute.agent.procs import wait_for
from compute.engines.transformers.responses import collect
from compute.engines.transformers.sampling import SamplingParams
from compute.engines.transformers.server import load_engine, parse_args
from compute.engines.transformers.text import IncrementalDetokenizer
from tests.compute.conftest import ENGINE_API_KEY, MAX_MODEL_LEN, SERVED_NAME

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROMPTS = [
    "Hello there, how are you?",
    "今天天气很好，我们去公园散步。",
    "Summarise: batching makes inference faster.",
    "A",
    "机器学习 and open models",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Numbers: 1 2 3 4 5",
    "请用一句话总结",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path) -> Any:
    """The same model loaded in the test process, as the reference for the engine's outputs."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # the engine subprocess needs the other core
    return AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, local_files_only=True, dtype=torch.float32
    ).eval()


def chat(client: httpx.Client, content: str, **params: Any) -> httpx.Response:
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": content}], **params}
    return client.post("/v1/chat/completions", json=body)


def chat_text(client: httpx.Client, content: str, max_tokens: int = 24) -> str:
    resp = chat(client, content, max_tokens=max_tokens, temperature=0)
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"]


def chat_prompt_ids(tokenizer: Any, content: str) -> list[int]:
    messages = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assert_openai_error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_models_endpoint_lists_the_served_model(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert card["id"] == SERVED_NAME
    assert card["object"] == "model"
    assert card["owned_by"] == "openmaas"
    assert isinstance(card["created"], int)


def test_chat_completion_has_openai_shape_and_matches_reference_greedy_generation(
    client: httpx.Client, tokenizer: Any, hf_model: Any
) -> None:
    content = "今天天气很好 — tell me more."
    resp = chat(client, content, max_tokens=12, temperature=0)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == SERVED_NAME
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "length"

    prompt_ids = chat_prompt_ids(tokenizer, content)
    assert body["usage"] == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 12,
        "total_tokens": len(prompt_ids) + 12,
    }

    with torch.inference_mode():
        out = hf_model.generate(torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False)
    expected = tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True)
    assert choice["message"]["content"] == expected


def test_streamed_chat_via_openai_sdk_matches_non_streamed_and_reports_usage(
    client: httpx.Client, engine_url: str
) -> None:
    content = "你好，世界！Stream this please."
    expected = chat_text(client, content, max_tokens=20)
    sdk = openai.OpenAI(base_url=engine_url + "/v1", api_key=ENGINE_API_KEY)
    stream = sdk.chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": content}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the SDK stops at `data: [DONE]`
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 20
    assert usage_chunk.usage.total_tokens == usage_chunk.usage.prompt_tokens + 20


def test_stream_ends_with_done_sentinel(client: httpx.Client) -> None:
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert json.loads(event.removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_chat_logprobs_follow_openai_shape(client: httpx.Client) -> None:
    resp = chat(client, "你好", max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
    assert resp.status_code == 200, resp.text
    content = resp.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}
        assert all(isinstance(b, int) and 0 <= b < 256 for b in item["bytes"])
        tops = [t["logprob"] for t in item["top_logprobs"]]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert item["logprob"] == pytest.approx(tops[0])  # greedy took the top token


def test_client_hanging_up_mid_stream_frees_its_batch_slot(client: httpx.Client) -> None:
    before = client.get("/v1/engine/stats").json()
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 200,
        "ignore_eos": True,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        for n, _ in enumerate(resp.iter_lines()):
            if n == 4:
                break

    def finished() -> dict[str, Any] | None:
        stats = client.get("/v1/engine/stats").json()
        return stats if stats["requests_finished"] > before["requests_finished"] else None

    stats = wait_for(finished, timeout_s=10, what="the hung-up request to end", ignore=())
    assert stats["requests_finished"] == before["requests_finished"] + 1
    assert stats["generation_tokens_total"] - before["generation_tokens_total"] < 200


def test_detokenizer_never_emits_half_a_chinese_character(tokenizer: Any) -> None:
    text = "机器学习模型需要大量的数据。你好，世界！"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) / 2  # byte-level pieces: characters do get split
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


def test_echo_logprobs_with_zero_max_tokens_score_the_prompt(
    client: httpx.Client, tokenizer: Any, hf_model: Any
) -> None:
    prompt = "The weather today is sunny 今天天气很好"
    resp = client.post(
        "/v1/completions",
        json={"model": SERVED_NAME, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert choice["text"] == prompt
    ids = tokenizer(prompt)["input_ids"]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == len(ids)
    assert lp["token_logprobs"][0] is None
    assert lp["top_logprobs"][0] is None
    assert lp["text_offset"][0] == 0
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": 0,
        "total_tokens": len(ids),
    }

    with torch.inference_mode():
        logits = hf_model(torch.tensor([ids])).logits[0]
    reference = torch.log_softmax(logits.float(), dim=-1)
    expected = [float(reference[j - 1, ids[j]]) for j in range(1, len(ids))]
    assert lp["token_logprobs"][1:] == pytest.approx(expected, abs=1e-4)
    for top, chosen in zip(lp["top_logprobs"][1:], lp["token_logprobs"][1:], strict=True):
        assert chosen in top.values()
        assert max(top.values()) >= chosen


def test_completion_accepts_token_ids_and_reports_generated_logprobs(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/completions",
        json={
            "model": SERVED_NAME,
            "prompt": [5, 6, 7, 8],
            "max_tokens": 4,
            "logprobs": 2,
            "temperature": 0,
        },
    )
    assert resp.status_code == 200, resp.text
    lp = resp.json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 4
    # Greedy picks the most likely token, so it heads each top-2 list.
    for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert chosen == pytest.approx(max(top.values()))


def test_greedy_and_seeded_sampling_are_deterministic(client: httpx.Client) -> None:
    assert chat_text(client, "Repeat after me") == chat_text(client, "Repeat after me")
    sampled = [
        chat(client, "Sample something", max_tokens=16, temperature=1.0, top_p=0.9, seed=7).json()
        for _ in range(2)
    ]
    contents = [s["choices"][0]["message"]["content"] for s in sampled]
    assert contents[0] == contents[1]


def test_concurrent_requests_are_batched_and_match_solo_results(client: httpx.Client) -> None:
    solo = [chat_text(client, p, max_tokens=32) for p in PROMPTS]
    before = client.get("/v1/engine/stats").json()
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: chat_text(client, p, max_tokens=32), PROMPTS))
    after = client.get("/v1/engine/stats").json()
    assert together == solo
    assert after["max_batch_size_seen"] > 1
    assert after["batched_decode_steps"] > before["batched_decode_steps"]
    assert after["requests_finished"] - before["requests_finished"] == len(PROMPTS)


def test_completion_with_several_prompts_returns_one_choice_each(client: httpx.Client) -> None:
    prompts = ["one", "two two", "三"]
    resp = client.post(
        "/v1/completions",
        json={
            "model": SERVED_NAME,
            "prompt": prompts,
            "max_tokens": 5,
            "temperature": 0,
            "echo": True,
        },
    )
    assert resp.status_code == 200, resp.text
    choices = resp.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert all(c["text"].startswith(p) for c, p in zip(choices, prompts, strict=True))


def test_stop_sequence_cuts_the_output_before_it(client: httpx.Client) -> None:
    prompt = "Tell me a story about a fox."
    full = chat_text(client, prompt, max_tokens=40)
    # A stop string from the second half of the greedy output that does not occur earlier.
    candidates = [full[i : i + 2] for i in range(len(full) // 2, len(full) - 1)]
    stop = next(c for c in candidates if full.index(c) >= len(full) // 2 and "\ufffd" not in c)
    cut = full.index(stop)
    resp = chat(client, prompt, max_tokens=40, temperature=0, stop=[stop, "never-seen-stop"])
    [choice] = resp.json()["choices"]
    assert choice["message"]["content"] == full[:cut]
    assert choice["finish_reason"] == "stop"

    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 40, "temperature": 0, "stop": stop, "stream": True}  # fmt: skip
    with client.stream("POST", "/v1/chat/completions", json=body) as stream:
        events = [
            json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")
        ]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == full[:cut]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


BAD_CHAT_BODIES = [
    pytest.param({"messages": "hello"}, "messages", id="messages-not-a-list"),
    pytest.param({"messages": None}, "messages", id="messages-missing"),
    pytest.param({"messages": []}, "messages", id="messages-empty"),
    pytest.param(
        {"messages": [{"role": 3, "content": "x"}]}, "messages[0].role", id="role-not-a-string"
    ),
    pytest.param({"max_tokens": "5"}, "max_tokens", id="max-tokens-string"),
    pytest.param({"max_tokens": True}, "max_tokens", id="max-tokens-bool"),
    pytest.param({"max_tokens": 0}, "max_tokens", id="max-tokens-zero"),
    pytest.param({"temperature": "hot"}, "temperature", id="temperature-string"),
    pytest.param({"temperature": 5}, "temperature", id="temperature-too-high"),
    pytest.param({"top_p": 2}, "top_p", id="top-p-too-high"),
    pytest.param({"stop": [1, 2]}, "stop", id="stop-not-strings"),
    pytest.param({"n": 2}, "n", id="n-above-one"),
    pytest.param({"stream": "yes"}, "stream", id="stream-string"),
    pytest.param({"max_tokens": MAX_MODEL_LEN}, "messages", id="no-room-for-completion"),
]


@pytest.mark.parametrize(("override", "param"), BAD_CHAT_BODIES)
def test_bad_chat_parameters_get_400_naming_the_parameter(
    client: httpx.Client, override: dict[str, Any], param: str
) -> None:
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], **override}
    body = {k: v for k, v in body.items() if v is not None}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param)


BAD_COMPLETION_BODIES = [
    pytest.param({"prompt": 42}, "prompt", id="prompt-number"),
    pytest.param({"prompt": None}, "prompt", id="prompt-missing"),
    pytest.param({"prompt": [10**9]}, "prompt", id="token-out-of-range"),
    pytest.param({"logprobs": 6}, "logprobs", id="logprobs-above-five"),
    pytest.param({"echo": "true"}, "echo", id="echo-string"),
    pytest.param(
        {"prompt": "word " * (MAX_MODEL_LEN + 10)}, "prompt", id="prompt-longer-than-context"
    ),
]


@pytest.mark.parametrize(("override", "param"), BAD_COMPLETION_BODIES)
def test_bad_completion_parameters_get_400_naming_the_parameter(
    client: httpx.Client, override: dict[str, Any], param: str
) -> None:
    body = {"model": SERVED_NAME, "prompt": "hi", **override}
    body = {k: v for k, v in body.items() if v is not None}
    assert_openai_error(client.post("/v1/completions", json=body), 400, param)


def test_prompt_longer_than_context_is_reported_as_such(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/completions", json={"model": SERVED_NAME, "prompt": "word " * 400, "max_tokens": 1}
    )
    assert assert_openai_error(resp, 400, "prompt")["code"] == "context_length_exceeded"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_json_gets_400(client: httpx.Client, path: str, raw: bytes) -> None:
    resp = client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert_openai_error(resp, 400)


def test_unknown_model_gets_404_model_not_found(client: httpx.Client) -> None:
    resp = chat(client, "hi", model="no-such-model")
    assert assert_openai_error(resp, 404, "model")["code"] == "model_not_found"
    resp = client.post("/v1/completions", json={"model": "gpt-4o", "prompt": "hi"})
    assert assert_openai_error(resp, 404, "model")["code"] == "model_not_found"


def test_unknown_route_gets_404_in_openai_shape(client: httpx.Client) -> None:
    assert_openai_error(client.get("/v1/nothing-here"), 404)


def test_recompute_mode_generates_the_same_tokens_as_the_kv_cache_mode(
    tiny_model_dir: Path,
) -> None:
    """The fallback for models whose cache cannot be merged must agree with the fast path."""
    args = parse_args(
        ["--model", str(tiny_model_dir), "--served-model-name", "t", "--max-batch-size", "3"]
    )
    torch.set_num_threads(1)

    async def generate(use_cache: bool) -> list[list[int]]:
        engine = load_engine(args)
        engine.scheduler._batch.use_cache = use_cache
        engine.scheduler.start()
        try:
            params = SamplingParams(max_tokens=6, temperature=0)
            seqs = [engine.submit(engine.encode_text(p), params) for p in PROMPTS[:5]]
            results = await asyncio.gather(*(collect(s) for s in seqs))
        finally:
            engine.scheduler.stop()
        return [[t.token_id for t in r.tokens] for r in results]

    assert asyncio.run(generate(True)) == asyncio.run(generate(False))
