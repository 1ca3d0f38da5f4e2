"""The fine-tuning runner in-process: labels, the loop, determinism, resume, DPO, outputs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.runner_helpers import (
    chat_rows,
    make_spec,
    metrics,
    preference_rows,
    read_events,
)
from training.runner.data import IGNORE, encode_chat, encode_preference
from training.runner.report import LocalReporter
from training.runner.spec import parse_spec
from training.runner.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def labelled_runs(tokenizer: Any, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded text of each maximal run of labelled tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != IGNORE
    return [tokenizer.decode(run) for run in runs]


def train(tmp: Path, model_dir: Path, cancel_after: int | None = None, **spec: Any) -> Path:
    parsed = parse_spec(make_spec(tmp, model_dir, **spec))
    Trainer(parsed).run(LocalReporter(parsed.output_dir, cancel_after=cancel_after))
    return parsed.output_dir


# --- data --------------------------------------------------------------------------------


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello, world!"},
    {"role": "assistant", "content": "The quick brown fox."},
    {"role": "user", "content": "And?"},
    {"role": "assistant", "content": "Numbers like 42"},
]


def test_only_assistant_content_and_its_end_marker_carry_loss(tokenizer):
    example = encode_chat(tokenizer, CONVERSATION, max_len=512)

    runs = labelled_runs(tokenizer, example.input_ids, example.labels)

    assert runs == ["The quick brown fox.<|im_end|>", "Numbers like 42<|im_end|>"]
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False
    )


def test_an_assistant_message_with_weight_0_gets_no_loss(tokenizer):
    messages = [dict(m) for m in CONVERSATION]
    messages[2]["weight"] = 0

    example = encode_chat(tokenizer, messages, max_len=512)

    assert labelled_runs(tokenizer, example.input_ids, example.labels) == [
        "Numbers like 42<|im_end|>"
    ]


def test_spans_follow_the_demo_models_template_too(tokenizer):
    from portal.demo.builder import CHAT_TEMPLATE

    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = CHAT_TEMPLATE

    example = encode_chat(tokenizer, CONVERSATION, max_len=512)

    assert labelled_runs(tokenizer, example.input_ids, example.labels) == [
        "The quick brown fox.<|im_end|>",
        "Numbers like 42<|im_end|>",
    ]


def test_an_opening_assistant_turn_is_labelled_without_its_header(tokenizer):
    example = encode_chat(tokenizer, CONVERSATION[2:], max_len=512)

    assert labelled_runs(tokenizer, example.input_ids, example.labels) == [
        "The quick brown fox.<|im_end|>",
        "Numbers like 42<|im_end|>",
    ]


def test_prompt_completion_rows_train_on_the_completion(tokenizer):
    from training.runner.data import encode_supervised

    row = {"prompt": "Hello, world!", "completion": "The quick brown fox."}

    example = encode_supervised(tokenizer, row, max_len=512)

    assert labelled_runs(tokenizer, example.input_ids, example.labels) == [
        "The quick brown fox.<|im_end|>"
    ]


def test_truncation_keeps_max_seq_len_tokens(tokenizer):
    full = encode_chat(tokenizer, CONVERSATION, max_len=512)

    cut = encode_chat(tokenizer, CONVERSATION, max_len=20)

    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]


def test_a_preference_row_shares_the_prompt_and_labels_each_completion(tokenizer):
    row = preference_rows(1)[0]

    pair = encode_preference(tokenizer, row, max_len=512)

    assert labelled_runs(tokenizer, pair.chosen.input_ids, pair.chosen.labels) == [
        "The quick brown fox jumps over the lazy dog.<|im_end|>"
    ]
    assert labelled_runs(tokenizer, pair.rejected.input_ids, pair.rejected.labels) == [
        "What is batching?"[:0]
        + "Batching requests together makes inference much faster.<|im_end|>"
    ]
    prompt = pair.chosen.labels.index(next(x for x in pair.chosen.labels if x != IGNORE))
    assert pair.chosen.input_ids[:prompt] == pair.rejected.input_ids[:prompt]


# --- the loop ----------------------------------------------------------------------------


def test_lora_steps_lower_the_training_and_held_out_loss(tmp_path, tiny_model_dir):
    out = train(
        tmp_path,
        tiny_model_dir,
        rows=chat_rows(16),
        valid=chat_rows(8, offset=100),
        # The tiny model's logits start near uniform; LoRA on lm_head moves them quickly.
        adapter={"target_modules": ["q_proj", "v_proj", "lm_head"], "r": 8, "alpha": 16},
        hyperparameters={"n_epochs": 3, "learning_rate": 1e-2, "eval_every": 4},
    )

    steps = metrics(out)
    assert len(steps) == 12 and steps[-1]["total_steps"] == 12
    assert steps[-1]["train_loss"] < steps[0]["train_loss"] - 1.0
    valid = [m["valid_loss"] for m in steps if m["valid_loss"] is not None]
    assert len(valid) == 3 and valid[-1] < valid[0] - 0.5
    assert steps[-1]["train_mean_token_accuracy"] > steps[0]["train_mean_token_accuracy"]
    assert steps[-1]["trained_tokens"] > steps[0]["trained_tokens"] > 0
    assert all(m["tokens_per_second"] > 0 and m["gpu_memory_bytes"] == 0 for m in steps)


def test_the_learning_rate_warms_up_then_decays_linearly(tmp_path, tiny_model_dir):
    out = train(
        tmp_path,
        tiny_model_dir,
        rows=chat_rows(8),
        hyperparameters={
            "n_epochs": 4,
            "batch_size": 2,
            "warmup_ratio": 0.25,
            "learning_rate": 1e-3,
        },
    )

    rates = [m["learning_rate"] for m in metrics(out)]
    assert rates[:5] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert rates[4:] == pytest.approx([1e-3 * (16 - s) / 12 for s in range(4, 16)])


def test_the_same_seed_gives_the_same_losses_bit_for_bit(tmp_path, tiny_model_dir):
    spec = {"rows": chat_rows(12), "adapter": {"dropout": 0.1}}

    first = metrics(train(tmp_path / "a", tiny_model_dir, **spec))
    second = metrics(train(tmp_path / "b", tiny_model_dir, **spec))
    other = metrics(train(tmp_path / "c", tiny_model_dir, seed=8, **spec))

    assert [m["train_loss"] for m in first] == [m["train_loss"] for m in second]
    assert [m["train_loss"] for m in first] != [m["train_loss"] for m in other]


def test_accumulation_steps_and_batch_size_count_optimizer_steps(tmp_path, tiny_model_dir):
    out = train(
        tmp_path,
        tiny_model_dir,
        rows=chat_rows(10),
        hyperparameters={"n_epochs": 1, "batch_size": 2, "gradient_accumulation_steps": 2},
    )

    assert [m["step"] for m in metrics(out)] == [1, 2, 3]  # 5 micro-batches: 2 + 2 + 1


def resumed(tmp: Path, model_dir: Path, first: Path, step: int, **spec: Any) -> Path:
    """Copy checkpoint ``step`` of the run in ``first`` to a fresh run's files and resume."""
    files = tmp / "files"
    shutil.copytree(first / "checkpoints" / f"step-{step:06d}", files / "resume")
    return train(tmp, model_dir, resume={"step": step, "dir": "resume"}, **spec)


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_a_run_resumed_from_a_checkpoint_ends_with_the_same_losses(
    tmp_path, tiny_model_dir, adapter
):
    spec = {
        "rows": chat_rows(12),
        "adapter": {"type": adapter, "dropout": 0.1},
        "hyperparameters": {
            "n_epochs": 4,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "checkpoint_every": 4,
            "warmup_ratio": 0.2,
        },
    }
    whole = metrics(train(tmp_path / "whole", tiny_model_dir, **spec))
    stopped = train(tmp_path / "stopped", tiny_model_dir, cancel_after=5, **spec)
    assert [m["step"] for m in metrics(stopped)] == [1, 2, 3, 4, 5]

    rest = metrics(resumed(tmp_path / "resumed", tiny_model_dir, stopped, 4, **spec))

    assert [m["step"] for m in rest] == list(range(5, 13))
    assert [m["train_loss"] for m in rest] == [m["train_loss"] for m in whole[4:]]
    assert [m["learning_rate"] for m in rest] == [m["learning_rate"] for m in whole[4:]]
    assert rest[-1]["trained_tokens"] == whole[-1]["trained_tokens"]


def test_a_cancel_stops_after_the_step_and_writes_no_result(tmp_path, tiny_model_dir):
    out = train(tmp_path, tiny_model_dir, cancel_after=2, rows=chat_rows(16))

    events = read_events(out)
    assert [m["step"] for m in metrics(out)] == [1, 2]
    assert not any(e["type"] == "result" for e in events)
    assert events[-1]["message"] == "cancelled at step 2"


def test_checkpoints_and_the_result_load_as_peft_adapters(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = train(
        tmp_path, tiny_model_dir, rows=chat_rows(8), hyperparameters={"checkpoint_every": 2}
    )

    checkpoints = [e for e in read_events(out) if e["type"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [2, 4]
    for directory in [Path(checkpoints[0]["dir"]), out / "result"]:
        names = {p.name for p in directory.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= names
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        model = PeftModel.from_pretrained(base, directory)
        assert any("lora_A" in name for name, _ in model.named_parameters())
    state = torch.load(Path(checkpoints[0]["dir"]) / "trainer_state.pt", weights_only=True)
    assert state["step"] == 2 and {"optimizer", "scheduler", "rng"} <= state.keys()
    result = next(e for e in read_events(out) if e["type"] == "result")
    assert [h[0] for h in result["history"]] == [1, 2, 3, 4]


# --- DPO ---------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_dpo_lowers_its_loss_and_raises_the_chosen_reward(tmp_path, tiny_model_dir, adapter):
    out = train(
        tmp_path,
        tiny_model_dir,
        method="dpo",
        rows=preference_rows(8),
        valid=preference_rows(4),
        adapter={"type": adapter},
        hyperparameters={
            "n_epochs": 4,
            "learning_rate": 1e-2 if adapter == "lora" else 1e-3,
            "beta": 0.5,
            "eval_every": 8,
        },
    )

    steps = metrics(out)
    assert steps[0]["train_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference
    assert steps[-1]["train_loss"] < 0.5
    assert steps[-1]["train_chosen_reward"] > 0 > steps[-1]["train_rejected_reward"]
    assert steps[-1]["train_mean_token_accuracy"] == 1.0  # reward accuracy for DPO
    assert steps[-1]["valid_loss"] < 0.6931
