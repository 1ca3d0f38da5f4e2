"""The green-list text watermark: the hash both sides share, the engine that plants it,
the adapter and agent that switch it on and hand it its key (never in argv)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from tokenizers import Tokenizer

from compute.agent.replica import engine_launch
from compute.engines.base import EngineArgError, EngineSpec
from compute.engines.transformers.sampling import WatermarkBias
from compute.engines.transformers_adapter import TransformersEngine
from compute.engines.watermark import Watermark, key_bytes, score, z_score
from tests.compute.conftest import ENGINE_API_KEY, REPO_ROOT, SERVED_NAME
from tests.conftest import WATERMARK_KEY

PROMPT = "Once upon a time"
TOKENS = 160
Z = 4.0


def watermark(secret: str = WATERMARK_KEY, gamma: float = 0.25) -> Watermark:
    return Watermark(key_bytes(secret), gamma)


# -- the green list ---------------------------------------------------------------------


def test_green_list_is_a_deterministic_function_of_key_and_previous_token():
    ids = torch.arange(5000)
    first, again = watermark().green(17, ids), watermark().green(17, ids)
    assert torch.equal(first, again)
    assert not torch.equal(first, watermark().green(18, ids))
    assert not torch.equal(first, watermark("another key").green(17, ids))


@pytest.mark.parametrize("gamma", [0.1, 0.25, 0.5])
def test_green_fraction_of_the_vocabulary_is_about_gamma(gamma):
    ids = torch.arange(32000)
    for prev in (0, 1, 2, 31999, 123456):
        fraction = watermark(gamma=gamma).green(prev, ids).float().mean().item()
        assert abs(fraction - gamma) < 0.01, (prev, fraction)


def test_the_engine_tensor_and_the_detector_scalar_agree():
    mark = watermark()
    ids = torch.arange(70000)
    green = mark.green(42, ids)
    for token in random.Random(1).sample(range(70000), 500):
        assert bool(green[token]) == mark.green(42, token)


def test_the_engine_bias_raises_green_logits_by_delta_and_leaves_the_ids_alone():
    bias = WatermarkBias(Watermark(key_bytes("k"), 0.25, 3.0))
    logits = torch.zeros(1000, dtype=torch.float16)
    raised = bias.apply(logits, 9)
    green = bias.watermark.green(9, torch.arange(1000))
    assert raised.dtype == torch.float32 and torch.equal(raised, green.float() * 3.0)
    assert torch.equal(bias.apply(logits, 9), raised)  # its cached ids were not changed


def test_random_tokens_score_near_zero_and_repeated_pairs_count_once():
    rng = random.Random(7)
    tokens = [rng.randrange(32000) for _ in range(3000)]
    result = score(watermark(), tokens)
    assert result.tokens_scored == 2999 and abs(result.z_score) < 4
    assert score(watermark(), [5, 6] * 200).tokens_scored == 2  # (5, 6) and (6, 5)


def test_z_score_is_the_papers_statistic():
    assert z_score(25, 100, 0.25) == 0.0
    assert z_score(100, 100, 0.25) == pytest.approx(75 / (100 * 0.25 * 0.75) ** 0.5)
    assert z_score(0, 0, 0.25) == 0.0


def test_a_watermark_out_of_range_is_refused():
    for gamma, delta in ((0.0, 2.0), (1.0, 2.0), (0.25, 0.0), (0.25, 50.0)):
        with pytest.raises(ValueError):
            Watermark(b"k", gamma, delta)


# -- the adapter and the agent ------------------------------------------------------------


def spec(key: str = "wm-secret", **args: Any) -> EngineSpec:
    return EngineSpec("/m", "m", "127.0.0.1", 9000, args, api_key="api", watermark_key=key)


def test_watermark_flags_go_on_the_command_line_and_its_key_only_in_the_environment():
    adapter = TransformersEngine()
    wanted = spec(watermark=True, watermark_gamma=0.5, watermark_delta=3)
    argv = adapter.build_command(wanted)
    assert argv[argv.index("--watermark-gamma") + 1] == "0.5" and "--watermark" in argv
    assert "wm-secret" not in " ".join(argv)
    assert adapter.build_env(wanted)["OPENMAAS_WATERMARK_KEY"] == "wm-secret"
    assert "OPENMAAS_WATERMARK_KEY" not in adapter.build_env(spec())
    assert "--watermark" not in adapter.build_command(spec(watermark=False))


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        ({"watermark_gamma": 0.5}, "k", "need watermark=True"),
        ({"watermark": True}, "", "no watermark key"),
        ({"watermark": True, "watermark_gamma": 0.99}, "k", "watermark_gamma"),
        ({"watermark": True, "watermark_delta": 0}, "k", "watermark_delta"),
        ({"watermark": "yes"}, "k", "watermark"),
    ],
)
def test_bad_watermark_arguments_are_refused(args, key, message):
    with pytest.raises(EngineArgError, match=message):
        TransformersEngine().build_command(spec(key, **args))


def test_agent_hands_the_key_to_the_engine_through_the_environment_only(tmp_path):
    desired = {
        "id": 1, "engine": "transformers", "served_name": "m", "secret": "s",
        "engine_args": {"watermark": True}, "watermark_key": "the-wm-key",
    }  # fmt: skip
    base = {"PATH": "/bin", "OPENMAAS_WATERMARK_KEY": "the agent's own"}
    launch = engine_launch(desired, tmp_path, "127.0.0.1", 9000, base)
    assert launch.env["OPENMAAS_WATERMARK_KEY"] == "the-wm-key"
    assert "the-wm-key" not in " ".join(launch.argv) and "--watermark" in launch.argv
    off = engine_launch({**desired, "engine_args": {}, "watermark_key": ""}, tmp_path,
                        "127.0.0.1", 9000, base)  # fmt: skip
    assert "OPENMAAS_WATERMARK_KEY" not in off.env  # not even the agent's own


# -- the engine ---------------------------------------------------------------------------


def generate(base_url: str, **params: Any) -> dict[str, Any]:
    body = {
        "model": SERVED_NAME, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 1.0,
        "seed": 11, "ignore_eos": True, **params,
    }  # fmt: skip
    auth = {"Authorization": f"Bearer {ENGINE_API_KEY}"}
    response = httpx.post(f"{base_url}/v1/completions", json=body, headers=auth, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def detect(tiny_model_dir: Path, text: str) -> Any:
    """What the portal's detector does: re-tokenize the text, score its pairs."""
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    return score(watermark(), tokenizer.encode(text, add_special_tokens=False).ids)


def test_watermarked_generation_is_detected_and_the_same_prompt_without_it_is_not(
    watermark_engine, engine_server, tiny_model_dir
):
    marked = generate(watermark_engine.base_url)["choices"][0]["text"]
    plain = generate(engine_server.base_url)["choices"][0]["text"]
    found, missed = detect(tiny_model_dir, marked), detect(tiny_model_dir, plain)
    assert found.tokens_scored >= 100 and found.z_score >= Z, found
    assert missed.z_score < Z, missed
    assert WATERMARK_KEY not in watermark_engine.logs()


def test_greedy_decoding_is_watermarked_too(watermark_engine, tiny_model_dir):
    text = generate(watermark_engine.base_url, temperature=0)["choices"][0]["text"]
    result = detect(tiny_model_dir, text)
    assert result.green_fraction > 0.5, result


def test_reported_logprobs_are_those_of_the_biased_distribution(
    watermark_engine, engine_server, tiny_model_dir
):
    # The first token follows the same prompt on both engines: against the bare model's
    # logprob, a green token's moves by delta - C and a red one's by -C, where C > 0 is
    # the growth of the normaliser (log-sum-exp) that the bias causes.
    marked = generate(watermark_engine.base_url, max_tokens=1, logprobs=5, temperature=0)
    plain = generate(engine_server.base_url, max_tokens=1, logprobs=5, temperature=0)
    biased = marked["choices"][0]["logprobs"]["top_logprobs"][0]
    bare = plain["choices"][0]["logprobs"]["top_logprobs"][0]
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    ids = {tokenizer.decode([i], skip_special_tokens=False): i for i in range(500)}
    prev = tokenizer.encode(PROMPT, add_special_tokens=True).ids[-1]
    growth = {
        biased[t] - bare[t] - 2.0 * watermark().green(prev, ids[t])
        for t in biased.keys() & bare.keys()
    }
    assert growth, (biased, bare)
    assert max(growth) - min(growth) < 1e-3 and max(growth) < -1e-3, growth
    stats = httpx.get(
        f"{watermark_engine.base_url}/v1/engine/stats",
        headers={"Authorization": f"Bearer {ENGINE_API_KEY}"},
    ).json()
    assert stats["watermarked_tokens_total"] >= 1


def test_the_engine_refuses_to_watermark_without_a_key(tiny_model_dir):
    env = {**os.environ, "OPENMAAS_ENGINE_API_KEY": "k", "OPENMAAS_WATERMARK_KEY": " "}
    done = subprocess.run(
        [sys.executable, "-m", "compute.engines.transformers_server", "--watermark",
         "--model", str(tiny_model_dir), "--served-model-name", "x"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "OPENMAAS_WATERMARK_KEY" in done.stderr
