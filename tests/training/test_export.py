"""Export job: a LoRA merged into its base, optionally int8-quantised with torchao, written
as a model directory that loads with ``from_pretrained`` and serves through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from tests.compute.conftest import ENGINE_API_KEY, SERVED_NAME, start_engine, stop_engine
from training.runner.export import ExportReport, run_export

HELDOUT = [
    [("user", "Hello, world! How are you doing today?"), ("assistant", "The weather is sunny.")],
    [
        ("system", "Answer in one sentence."),
        ("user", "Please summarise the following paragraph."),
        ("assistant", "A model serves tokens to many users at once."),
    ],
    [("user", "今天天气很好"), ("assistant", "我们去公园散步。"), ("user", "Why?")],
    [("user", "Numbers like 42?"), ("assistant", "Numbers like 42, 3.14 and 1000 appear.")],
]
PROMPT = torch.tensor([[0, 7, 42, 100, 250, 31, 12, 9]])


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA on q_proj/v_proj whose B matrices are random (not peft's zero start), so
    merging it changes the weights."""
    torch.manual_seed(7)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    out = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("heldout") / "valid.jsonl"
    rows = [{"messages": [{"role": r, "content": c} for r, c in chat]} for chat in HELDOUT]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def export(
    tiny_model_dir: Path, adapter_dir: Path, heldout: Path, out: Path, quantize: str | None
) -> tuple[Path, ExportReport]:
    report = run_export(tiny_model_dir, adapter_dir, out, quantize=quantize, heldout=heldout)
    return out, report


@pytest.fixture(scope="module")
def merged(
    tiny_model_dir: Path, adapter_dir: Path, heldout: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ExportReport]:
    out = tmp_path_factory.mktemp("export") / "merged"
    return export(tiny_model_dir, adapter_dir, heldout, out, None)


@pytest.fixture(scope="module")
def int8(
    tiny_model_dir: Path, adapter_dir: Path, heldout: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ExportReport]:
    out = tmp_path_factory.mktemp("export") / "int8"
    return export(tiny_model_dir, adapter_dir, heldout, out, "int8")


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROMPT).logits


def test_merged_export_gives_the_logits_of_base_plus_adapter(
    tiny_model_dir: Path, adapter_dir: Path, merged: tuple[Path, ExportReport]
) -> None:
    out, report = merged
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = logits(base)
    expected = logits(PeftModel.from_pretrained(base, adapter_dir).eval())
    got = logits(AutoModelForCausalLM.from_pretrained(out).eval())
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter does change the output
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert report["quantization"] == {"method": None}
    assert report["bytes"] == report["base_bytes"]  # same dtype, same tensors
    assert report["heldout_tokens"] > 0
    assert report["heldout_loss_after"] == pytest.approx(report["heldout_loss_before"], abs=1e-5)


def test_export_keeps_tokenizer_chat_template_and_generation_config(
    tiny_model_dir: Path, merged: tuple[Path, ExportReport]
) -> None:
    out, _ = merged
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    generation = json.loads((out / "generation_config.json").read_text())
    assert (
        generation["eos_token_id"]
        == json.loads((tiny_model_dir / "config.json").read_text())["eos_token_id"]
    )


def test_int8_export_is_smaller_and_scores_close_to_full_precision(
    int8: tuple[Path, ExportReport],
) -> None:
    out, report = int8
    assert report["bytes"] < 0.7 * report["base_bytes"]
    quantization = report["quantization"]
    assert quantization["method"] == "torchao" and quantization["scheme"] == "int8"
    assert quantization["quantized_linear"] == quantization["linear"] - 1  # all but lm_head
    before, after = report["heldout_loss_before"], report["heldout_loss_after"]
    assert before is not None and after is not None
    assert after == pytest.approx(before, rel=0.01)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"


def test_int8_export_loads_back_quantised_with_plain_from_pretrained(
    adapter_dir: Path, tiny_model_dir: Path, int8: tuple[Path, ExportReport]
) -> None:
    out, _ = int8
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert type(weight) is not torch.nn.Parameter  # a torchao int8 tensor, not floats
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    expected = logits(PeftModel.from_pretrained(base, adapter_dir).eval())
    assert (logits(model) - expected).abs().max() < 0.05


def test_unknown_quantisation_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quantize"):
        run_export(tiny_model_dir, None, tmp_path / "out", quantize="int3", heldout=None)


def test_int8_export_serves_through_the_engine(
    int8: tuple[Path, ExportReport], tmp_path: Path
) -> None:
    out, _ = int8
    engine = start_engine(out, tmp_path / "engine.log", "--num-threads", "1")
    try:
        reply = httpx.post(
            engine.base_url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {ENGINE_API_KEY}"},
            json={
                "model": SERVED_NAME,
                "messages": [{"role": "user", "content": "Hello, world!"}],
                "max_tokens": 8,
                "temperature": 0,
            },
            timeout=60.0,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["usage"]["completion_tokens"] == 8
        assert body["choices"][0]["message"]["content"]
    finally:
        assert stop_engine(engine) == 0, engine.logs()
