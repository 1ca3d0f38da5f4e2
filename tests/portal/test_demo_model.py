"""The demo model builder: a loadable, chatty, reproducible Hugging Face folder.

No database is needed: every test works on folders under ``tmp_path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from portal.demo.builder import (
    IM_END,
    build_demo_model,
    demo_model_fingerprint,
    deterministic_torch,
    load_corpus,
)
from tests.conftest import DEMO_TEST_STEPS


@pytest.fixture(scope="module")
def demo_dir(demo_model_dir: Path) -> Path:
    return demo_model_dir


@pytest.fixture(scope="module")
def loaded(demo_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(demo_dir), AutoTokenizer.from_pretrained(demo_dir)


def _first_prompt(lang: str) -> list[dict[str, str]]:
    row = next(r for r in load_corpus() if r["lang"] == lang and len(r["messages"]) == 2)
    return row["messages"][:1]


def test_corpus_is_bilingual_chat() -> None:
    rows = load_corpus()
    langs = [r["lang"] for r in rows]
    assert len(rows) >= 300
    assert 0.4 < langs.count("zh") / len(rows) < 0.6
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles[-1] == "assistant" and "user" in roles
        assert all(isinstance(m["content"], str) and m["content"] for m in row["messages"])


def test_folder_has_standard_files(demo_dir: Path) -> None:
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert (demo_dir / name).is_file(), name
    tok_config = json.loads((demo_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    config = json.loads((demo_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_greedy_chat_ends_with_eos(loaded: tuple[Any, Any], lang: str) -> None:
    model, tok = loaded
    prompt = tok.apply_chat_template(
        _first_prompt(lang), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    limit = model.generation_config.max_new_tokens
    with torch.no_grad():
        out = model.generate(**prompt, do_sample=False, max_new_tokens=limit)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    assert tok.eos_token == IM_END
    assert new[-1] == tok.eos_token_id and len(new) <= limit
    text = tok.decode(new, skip_special_tokens=True)
    assert isinstance(text, str) and text.strip()


def test_chat_template_renders_chatml(loaded: tuple[Any, Any]) -> None:
    _, tok = loaded
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )


def test_model_card_front_matter(demo_dir: Path) -> None:
    text = (demo_dir / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("\n---", 1)[0][3:])
    assert front["license"] == "apache-2.0"
    assert front["language"] == ["zh", "en"]
    assert set(front["tags"]) >= {"openmaas", "demo", "llama"}
    assert front["pipeline_tag"] == "text-generation"
    assert front["datasets"] == ["openmaas/demo-corpus"]
    assert "base_model" not in front
    assert f"{DEMO_TEST_STEPS} steps" in text


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path) -> None:
    def build(name: str, seed: int) -> str:
        return demo_model_fingerprint(
            build_demo_model(tmp_path / name, seed=seed, steps=3, say=lambda msg: None)
        )

    first, again, other = build("a", 11), build("b", 11), build("c", 12)
    assert first == again
    assert other != first
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()


def test_zero_steps_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps"):
        build_demo_model(tmp_path, steps=0, say=lambda msg: None)


def test_build_leaves_torch_settings_alone() -> None:
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    with deterministic_torch(seed=1, threads=1):
        torch.rand(3)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state)
