"""Multi-LoRA on the CPU engine: adapters loaded at runtime next to the base model, driven
over HTTP on one real engine process (plus one in-process check of mixed batches)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch

from compute.agent.procs import wait_for
from compute.engines.transformers.errors import ApiError
from compute.engines.transformers.lora import LoraModel, read_adapter_config
from compute.engines.transformers.responses import collect
from compute.engines.transformers.sampling import SamplingParams
from compute.engines.transformers.server import load_engine, parse_args
from tests.compute.conftest import (
    ENGINE_API_KEY,
    SERVED_NAME,
    EngineProcess,
    start_engine,
    stop_engine,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

A, B = "ft:openmaas/tiny-llama:olivia:a.1:ftjob-A", "ft:openmaas/tiny-llama:olivia:b:ftjob-B"
PROMPTS = ["Hello there, how are you?", "今天天气很好", "Numbers: 1 2 3"]
MAX_TOKENS = 10
MAX_LORAS = 3


def build_adapter(model_dir: Path, out: Path, seed: int, r: int = 4, **config: Any) -> Path:
    """A LoRA adapter for ``model_dir`` with random non-zero ``lora_B`` (a fresh LoRA has
    zeros there and would not change the outputs), saved with peft's ``save_pretrained``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    lora = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"],
        task_type="CAUSAL_LM", **config,
    )  # fmt: skip
    model = get_peft_model(base, lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("adapters")
    return {
        A: build_adapter(tiny_model_dir, root / "a", seed=1),
        B: build_adapter(tiny_model_dir, root / "b", seed=2, r=8),
    }


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def reference_model(model_dir: Path, adapter: Path | None) -> Any:
    """The base model, or the base with ``adapter`` through peft, loaded in the test process."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # the engine subprocess needs the other core
    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    return base if adapter is None else PeftModel.from_pretrained(base, adapter).eval()


def greedy_text(model: Any, tokenizer: Any, content: str, max_tokens: int = MAX_TOKENS) -> str:
    """What plain ``generate`` answers to one chat message (greedy)."""
    messages = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False
        )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def chat(client: httpx.Client, model: str, content: str, **params: Any) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        **params,
    }
    return client.post("/v1/chat/completions", json=body)


def chat_text(client: httpx.Client, model: str, content: str) -> str:
    resp = chat(client, model, content)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == model
    return resp.json()["choices"][0]["message"]["content"]


def load(client: httpx.Client, name: str, path: Path | str) -> httpx.Response:
    return client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})


def error_code(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]["code"]


@pytest.fixture(scope="module")
def lora_engine(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    log_path = tmp_path_factory.mktemp("lora-engine") / "engine.log"
    engine = start_engine(
        tiny_model_dir, log_path, "--max-batch-size", "8", "--num-threads", "1",
        "--max-loras", str(MAX_LORAS),
    )  # fmt: skip
    yield engine
    assert stop_engine(engine) == 0, engine.logs()


@pytest.fixture(scope="module")
def client(lora_engine: EngineProcess) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {ENGINE_API_KEY}"}
    with httpx.Client(base_url=lora_engine.base_url, timeout=60.0, headers=auth) as c:
        yield c


@pytest.fixture(scope="module")
def base_before(client: httpx.Client) -> dict[str, str]:
    """The engine's greedy base outputs before any adapter was loaded."""
    assert client.get("/v1/engine/stats").json()["lora_adapters"] == 0
    return {p: chat_text(client, SERVED_NAME, p) for p in PROMPTS}


@pytest.fixture
def loaded(client: httpx.Client, base_before: dict[str, str], adapter_dirs: dict) -> dict:
    """A and B loaded (loading again is a no-op, so every test may ask)."""
    for name, path in adapter_dirs.items():
        resp = load(client, name, path)
        assert resp.status_code == 200, resp.text
        assert resp.text.startswith("Success")
    return adapter_dirs


def test_models_lists_the_base_and_each_adapter_with_the_base_as_parent(
    client: httpx.Client, loaded: dict
) -> None:
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert set(cards) == {SERVED_NAME, A, B}
    assert cards[SERVED_NAME]["parent"] is None
    for name in (A, B):
        assert cards[name]["parent"] == SERVED_NAME
        assert cards[name]["object"] == "model"
        assert "root" not in cards[name]  # a path on the node stays private
    assert client.get(f"/v1/models/{A}").json()["id"] == A


def test_adapter_output_equals_peft_generate_and_base_output_is_unchanged(
    client: httpx.Client, loaded: dict, base_before: dict[str, str], tokenizer: Any,
    tiny_model_dir: Path,
) -> None:  # fmt: skip
    for name, path in loaded.items():
        reference = reference_model(tiny_model_dir, path)
        for prompt in PROMPTS:
            text = chat_text(client, name, prompt)
            assert text == greedy_text(reference, tokenizer, prompt)
            assert text != base_before[prompt]  # the adapter really changes the model
    plain = reference_model(tiny_model_dir, None)
    for prompt in PROMPTS:
        assert chat_text(client, SERVED_NAME, prompt) == base_before[prompt]
        assert base_before[prompt] == greedy_text(plain, tokenizer, prompt)


def test_concurrent_requests_to_base_and_adapters_share_batches_and_keep_their_outputs(
    client: httpx.Client, lora_engine: EngineProcess, loaded: dict
) -> None:
    models = [SERVED_NAME, A, B]
    solo = {(m, p): chat_text(client, m, p) for m in models for p in PROMPTS}
    before = client.get("/v1/engine/stats").json()
    sdk = openai.OpenAI(base_url=lora_engine.base_url + "/v1", api_key=ENGINE_API_KEY)

    def streamed(model: str, prompt: str) -> str:
        stream = sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS, temperature=0, stream=True,
        )  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    def ask(job: tuple[str, str, bool]) -> str:
        model, prompt, stream = job
        return streamed(model, prompt) if stream else chat_text(client, model, prompt)

    jobs = [(m, p, i % 2 == 0) for i, (m, p) in enumerate(solo)]  # half of them streamed
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(ask, jobs))
    after = client.get("/v1/engine/stats").json()
    assert dict(zip(solo, results, strict=True)) == solo
    assert after["mixed_adapter_steps"] > before["mixed_adapter_steps"]


def test_echo_logprobs_with_an_adapter_score_the_prompt_with_that_adapter(
    client: httpx.Client, loaded: dict, tokenizer: Any, tiny_model_dir: Path
) -> None:
    prompt = "The weather today is sunny"
    body = {"model": A, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1}
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == A
    got = resp.json()["choices"][0]["logprobs"]["token_logprobs"]
    ids = tokenizer(prompt)["input_ids"]
    with torch.inference_mode():
        logits = reference_model(tiny_model_dir, loaded[A])(torch.tensor([ids])).logits[0]
    lps = torch.log_softmax(logits.float(), dim=-1)
    assert got[1:] == pytest.approx(
        [float(lps[j - 1, ids[j]]) for j in range(1, len(ids))], abs=1e-4
    )


def test_loading_the_same_name_and_path_again_is_a_no_op(
    client: httpx.Client, loaded: dict
) -> None:
    stats = client.get("/v1/engine/stats").json()
    resp = load(client, A, loaded[A])
    assert resp.status_code == 200 and "already loaded" in resp.text
    assert client.get("/v1/engine/stats").json()["lora_adapters"] == stats["lora_adapters"]


def test_unloaded_adapter_is_a_404_and_its_name_can_load_again(
    client: httpx.Client, loaded: dict, tmp_path: Path
) -> None:
    copy = shutil.copytree(loaded[A], tmp_path / "c")
    assert load(client, "scratch", copy).status_code == 200
    expected = chat_text(client, "scratch", PROMPTS[0])
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "scratch"}).status_code == 200

    assert error_code(chat(client, "scratch", PROMPTS[0]), 404) == "model_not_found"
    assert "scratch" not in {c["id"] for c in client.get("/v1/models").json()["data"]}
    again = client.post("/v1/unload_lora_adapter", json={"lora_name": "scratch"})
    assert error_code(again, 404) == "model_not_found"
    assert chat_text(client, A, PROMPTS[0])  # the others stay

    assert load(client, "scratch", copy).status_code == 200
    assert chat_text(client, "scratch", PROMPTS[0]) == expected
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "scratch"}).status_code == 200
    # Retired weights are freed once unused: only A and B are left in memory.
    assert client.get("/v1/engine/stats").json()["lora_adapters"] == 2


def stream_contents(lines: Iterator[str]) -> Iterator[str]:
    """The content deltas of a streamed chat completion's SSE lines."""
    for line in lines:
        if line.startswith("data: {"):
            yield json.loads(line[6:])["choices"][0]["delta"].get("content") or ""


def test_a_stream_running_when_its_adapter_is_unloaded_finishes_with_that_adapter(
    client: httpx.Client, loaded: dict, tmp_path: Path
) -> None:
    copy = shutil.copytree(loaded[A], tmp_path / "inflight")
    assert load(client, "inflight", copy).status_code == 200
    long = {"max_tokens": 200, "ignore_eos": True}  # still running when the unload answers
    expected = chat(client, "inflight", PROMPTS[1], **long).json()["choices"][0]["message"]
    body = {
        "model": "inflight", "messages": [{"role": "user", "content": PROMPTS[1]}],
        "temperature": 0, "stream": True, **long,
    }  # fmt: skip
    with client.stream("POST", "/v1/chat/completions", json=body) as stream:
        contents = stream_contents(stream.iter_lines())
        first = next(c for c in contents if c)  # generation has started
        unloaded = client.post("/v1/unload_lora_adapter", json={"lora_name": "inflight"})
        assert unloaded.status_code == 200
        assert client.get("/v1/engine/stats").json()["lora_adapters"] == 3  # still in use
        assert error_code(chat(client, "inflight", "hi"), 404) == "model_not_found"
        assert first + "".join(contents) == expected["content"]
    wait_for(
        lambda: client.get("/v1/engine/stats").json()["lora_adapters"] == 2,
        timeout_s=10, what="the retired adapter to be freed",
    )  # fmt: skip


def test_adapters_that_cannot_be_served_are_refused_with_400(
    client: httpx.Client, loaded: dict, tiny_model_dir: Path, tmp_path: Path
) -> None:
    wide = build_adapter(tiny_model_dir, tmp_path / "wide", seed=3, r=128)  # over max rank 64
    dora = build_adapter(tiny_model_dir, tmp_path / "dora", seed=3, use_dora=True)
    alien = shutil.copytree(loaded[A], tmp_path / "alien")
    config = json.loads((alien / "adapter_config.json").read_text())
    (alien / "adapter_config.json").write_text(
        json.dumps({**config, "target_modules": ["no_such_proj"]})
    )
    for name, path in [
        ("missing", tmp_path / "nothing-here"),
        ("relative", "adapters/a"),
        ("wide", wide),
        ("dora", dora),
        ("alien", alien),
        (A, loaded[B]),  # the name is taken by another path
        (SERVED_NAME, loaded[A]),  # the base's own name
    ]:
        assert error_code(load(client, name, path), 400) == "invalid_lora_adapter", name
    missing = client.post("/v1/load_lora_adapter", json={"lora_name": "x"})
    assert error_code(missing, 400) == "missing_required_parameter"

    # A failed load leaves nothing behind: the base and the adapters answer as before.
    assert client.get("/v1/engine/stats").json()["lora_adapters"] == 2
    assert {c["id"] for c in client.get("/v1/models").json()["data"]} == {SERVED_NAME, A, B}


def test_no_more_than_max_loras_adapters_at_once(
    client: httpx.Client, loaded: dict, tmp_path: Path
) -> None:
    assert load(client, "third", loaded[A]).status_code == 200  # MAX_LORAS = 3
    try:
        full = load(client, "fourth", loaded[A])
        assert error_code(full, 400) == "invalid_lora_adapter"
        assert "maximum of 3" in full.json()["error"]["message"]
    finally:
        client.post("/v1/unload_lora_adapter", json={"lora_name": "third"})


def test_adapter_endpoints_need_the_engine_secret(lora_engine: EngineProcess, loaded: dict) -> None:
    with httpx.Client(base_url=lora_engine.base_url, timeout=10.0) as anonymous:
        body = {"lora_name": "x", "lora_path": str(loaded[A])}
        assert error_code(anonymous.post("/v1/load_lora_adapter", json=body), 401)
        unload = anonymous.post("/v1/unload_lora_adapter", json={"lora_name": A})
        assert error_code(unload, 401) == "invalid_api_key"
        assert error_code(chat(anonymous, A, "hi"), 401) == "invalid_api_key"


def test_mixed_adapter_batches_match_in_cache_and_recompute_mode(
    tiny_model_dir: Path, adapter_dirs: dict
) -> None:
    """The KV-cache path (one forward for rows of several adapters) agrees with recomputing
    every row from scratch, token for token."""
    args = parse_args(["--model", str(tiny_model_dir), "--served-model-name", "t"])
    torch.set_num_threads(1)

    async def generate(use_cache: bool) -> list[list[int]]:
        engine = load_engine(args)
        engine.scheduler._batch.use_cache = use_cache
        engine.scheduler.start()
        try:
            for name, path in adapter_dirs.items():
                await engine.load_adapter(name, str(path))
            params = SamplingParams(max_tokens=6, temperature=0)
            keys = [None, *(engine.adapters.served[n].key for n in adapter_dirs)]
            seqs = [
                engine.submit(engine.encode_text(p), params, key)
                for p in PROMPTS for key in keys
            ]  # fmt: skip
            results = await asyncio.gather(*(collect(s) for s in seqs))
        finally:
            engine.scheduler.stop()
        return [[t.token_id for t in r.tokens] for r in results]

    assert asyncio.run(generate(True)) == asyncio.run(generate(False))


def test_adapter_options_that_would_change_the_base_weights_are_refused_or_neutralised(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    biased = build_adapter(tiny_model_dir, tmp_path / "bias", seed=4, bias="lora_only")
    with pytest.raises(ApiError, match="bias"):
        read_adapter_config(str(biased), 64)

    pissa = build_adapter(tiny_model_dir, tmp_path / "pissa", seed=4)
    config = json.loads((pissa / "adapter_config.json").read_text())
    (pissa / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": "pissa"}))
    base = reference_model(tiny_model_dir, None)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = LoraModel(base, torch.device("cpu"))
    model.load("lora0", str(pissa), read_adapter_config(str(pissa), 64))
    # PiSSA initialisation would rewrite the base weights; loaded weights replace it anyway.
    after = {
        k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora" not in k
    }
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
