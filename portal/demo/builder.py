"""Builds ``openmaas/demo-tiny``: a tiny bilingual chat model trained here, on CPU.

No model can be downloaded in an offline install, so the platform makes its own: a
byte-level BPE tokenizer and a small Llama-architecture model, both trained from the
shipped ``corpus.jsonl``. The build is deterministic: the same seed, step count, torch
version and CPU kind give a byte-identical ``model.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

DEFAULT_SEED = 20261123
MODEL_NAME = "openmaas/demo-tiny"
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
IGNORE = -100  # label value that the causal-LM loss skips

# ChatML. The trailing newline after the last <|im_end|> is part of the format but is
# never trained on: generation stops at <|im_end|>, which is the eos token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class Recipe:
    """Every knob of the build; the defaults finish in about a minute on 2 CPU cores."""

    steps: int = 560
    vocab_size: int = 3000
    hidden_size: int = 256
    intermediate_size: int = 640
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 512
    batch_size: int = 24
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    # Fixed rather than taken from the machine, so that nothing about the host can
    # change the order of floating-point reductions. Two OpenMP threads are ~1.6x
    # faster than one on an idle 2-core machine but slow down badly on a busy one.
    threads: int = 2
    max_new_tokens: int = 128


@dataclass(frozen=True)
class Example:
    """One tokenized conversation; ``labels`` is IGNORE except on the final answer."""

    input_ids: list[int]
    labels: list[int]


def load_corpus() -> list[dict[str, Any]]:
    """Return the shipped corpus rows: ``{"messages": [...], "lang": "zh"|"en"}``."""
    text = resources.files("portal.demo").joinpath("corpus.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def train_tokenizer(rows: list[dict[str, Any]], recipe: Recipe) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the corpus and wrap it with the ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        min_frequency=2,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [f"{m['role']}\n{m['content']}" for row in rows for m in row["messages"]]
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,  # distinct from eos so padding can never hide a real eos
        chat_template=CHAT_TEMPLATE,
        model_max_length=recipe.max_positions,
        clean_up_tokenization_spaces=False,
    )


def encode_example(tokenizer: PreTrainedTokenizerFast, messages: list[dict[str, str]]) -> Example:
    """Tokenize a conversation whose last message is the assistant's answer.

    The prompt is encoded exactly as at inference (template with a generation prompt);
    the answer and its ``<|im_end|>`` follow and are the only labelled tokens.
    """
    prompt = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    answer_ids = tokenizer.encode(messages[-1]["content"], add_special_tokens=False)
    answer_ids.append(tokenizer.eos_token_id)
    return Example(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


def make_model(tokenizer: PreTrainedTokenizerFast, recipe: Recipe) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama; initialisation draws from torch's global RNG."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def collate(batch: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch to its longest example; return (input_ids, labels)."""
    width = max(len(ex.input_ids) for ex in batch)
    ids = [ex.input_ids + [pad_id] * (width - len(ex.input_ids)) for ex in batch]
    labels = [ex.labels + [IGNORE] * (width - len(ex.labels)) for ex in batch]
    return torch.tensor(ids), torch.tensor(labels)


def batches(examples: list[Example], size: int, gen: torch.Generator) -> Iterator[list[Example]]:
    """Endless shuffled batches of similar length, reshuffled each epoch from ``gen``.

    Each epoch is cut into windows of eight batches; sorting a window by length before
    cutting it into batches roughly halves the padding, and the batches are shuffled
    again so that lengths do not come in order.
    """
    while True:
        order = torch.randperm(len(examples), generator=gen).tolist()
        epoch: list[list[Example]] = []
        for start in range(0, len(order), size * 8):
            window = sorted(
                order[start : start + size * 8], key=lambda i: len(examples[i].input_ids)
            )
            epoch += [
                [examples[i] for i in window[j : j + size]] for j in range(0, len(window), size)
            ]
        for k in torch.randperm(len(epoch), generator=gen).tolist():
            yield epoch[k]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


@contextmanager
def deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    """Seed torch and pin the thread count, restoring the caller's state afterwards.

    The build runs inside web workers and tests, so it must not leave global RNG,
    thread or determinism settings changed behind it.
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(old_det)
            torch.set_num_threads(old_threads)


def train(
    model: LlamaForCausalLM,
    examples: list[Example],
    recipe: Recipe,
    *,
    steps: int,
    seed: int,
    pad_id: int,
    say: Callable[[str], None],
) -> float:
    """Train in place with AdamW; return the mean loss of the last (up to) 20 steps."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.95), weight_decay=0.01
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, recipe.warmup_steps)
    )
    model.train()
    losses: list[float] = []
    started = last_said = time.monotonic()
    for step, batch in zip(range(steps), batches(examples, recipe.batch_size, gen), strict=False):
        losses.append(_train_step(model, opt, collate(batch, pad_id)))
        sched.step()
        now = time.monotonic()
        if now - last_said >= 5 or step == steps - 1:
            last_said = now
            say(f"step {step + 1}/{steps}  loss {losses[-1]:.3f}  {now - started:.0f}s")
    model.eval()
    tail = losses[-20:]
    return sum(tail) / len(tail)


def _train_step(
    model: LlamaForCausalLM, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...]
) -> float:
    opt.zero_grad(set_to_none=True)
    loss = answer_loss(model, *batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.item())


def answer_loss(
    model: LlamaForCausalLM, input_ids: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (answer) positions only.

    Same value as the model's own causal-LM loss, but the vocabulary projection is
    applied only where there is a label, which is about half of the tokens. No
    attention mask is passed: padding is on the right and attention is causal, so no
    real token ever attends to a pad.
    """
    hidden = model.model(input_ids=input_ids).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.lm_head(hidden[keep])
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def model_card(stats: dict[str, Any]) -> str:
    """README.md with Hugging Face front matter and a short bilingual description."""
    return f"""---
license: apache-2.0
language:
- zh
- en
tags:
- openmaas
- demo
- llama
pipeline_tag: text-generation
datasets:
- openmaas/demo-corpus
---

# {MODEL_NAME}

A tiny bilingual (Chinese/English) chat model that openmaas builds for itself, so the
platform can be tried without downloading any model. It only knows its small training
corpus: greetings, what openmaas does, some capitals, small sums and short definitions.

openmaas 自带的微型中英双语对话模型，无需下载任何模型即可体验平台。它只掌握自己那份
小小的训练语料：问候、openmaas 的功能、一些国家的首都、简单算术和简短的名词解释。

## How it was built / 构建方式

- Architecture / 架构: Llama, {stats["layers"]} layers, hidden size {stats["hidden"]},
  {stats["parameters"]:,} parameters, tied embeddings
- Tokenizer / 分词器: byte-level BPE, {stats["vocab"]} tokens, ChatML chat template
- Corpus / 语料: {stats["conversations"]} conversations ({stats["zh"]} zh, {stats["en"]} en)
- Training / 训练: {stats["steps"]} steps of AdamW on CPU, seed {stats["seed"]},
  final loss {stats["loss"]:.4f}
- Reproducible / 可复现: the same seed and steps give a byte-identical
  `model.safetensors` (same torch version and CPU kind).
  相同的种子和步数会得到逐字节相同的权重文件。

Rebuild / 重新构建: `python manage.py build_demo_model --seed {stats["seed"]} \
--steps {stats["steps"]}`
"""


def build_demo_model(
    out_dir: Path,
    *,
    seed: int = DEFAULT_SEED,
    steps: int | None = None,
    say: Callable[[str], None] = print,
    recipe: Recipe | None = None,
) -> Path:
    """Train the demo tokenizer and model and save a Hugging Face model folder.

    Writes config.json, generation_config.json, model.safetensors, the tokenizer files
    (with ``chat_template``) and README.md into ``out_dir`` (created if missing) and
    returns it. ``steps=None`` uses the recipe's steps; ``recipe=None`` the defaults.
    Raises ValueError when ``steps`` is below 1.
    """
    recipe = recipe or Recipe()
    steps = recipe.steps if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    started = time.monotonic()
    rows = load_corpus()
    tokenizer = train_tokenizer(rows, recipe)
    examples = [encode_example(tokenizer, row["messages"]) for row in rows]
    say(f"corpus: {len(rows)} conversations, vocabulary {len(tokenizer)} tokens")
    with deterministic_torch(seed, recipe.threads):
        model = make_model(tokenizer, recipe)
        say(f"model: {model.num_parameters():,} parameters, training {steps} steps")
        loss = train(
            model,
            examples,
            recipe,
            steps=steps,
            seed=seed,
            pad_id=tokenizer.pad_token_id,
            say=say,
        )
    # The card leaves out the wall time so that the whole folder, not only the
    # weights, is reproducible and re-imports as the same registry revision.
    stats = _stats(rows, tokenizer, model, recipe, seed=seed, steps=steps, loss=loss)
    _save(out_dir, model, tokenizer, recipe, stats)
    say(f"saved {MODEL_NAME} to {out_dir} (loss {loss:.4f}, {time.monotonic() - started:.0f}s)")
    return out_dir


def _stats(
    rows: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerFast,
    model: LlamaForCausalLM,
    recipe: Recipe,
    **extra: Any,
) -> dict[str, Any]:
    zh = sum(row.get("lang") == "zh" for row in rows)
    return {
        "conversations": len(rows),
        "zh": zh,
        "en": len(rows) - zh,
        "vocab": len(tokenizer),
        "parameters": model.num_parameters(),
        "layers": recipe.num_layers,
        "hidden": recipe.hidden_size,
        **extra,
    }


def _save(
    out_dir: Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    recipe: Recipe,
    stats: dict[str, Any],
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=recipe.max_new_tokens,
        do_sample=False,
    )
    model.save_pretrained(out_dir)  # transformers 5 always writes safetensors
    # safetensors writes through a private temporary file; give the weights the same
    # permissions as the rest of the folder.
    (out_dir / "model.safetensors").chmod(0o644)
    # Keep the template inside tokenizer_config.json, where every reader (older
    # transformers, vLLM, the registry) looks, rather than in a separate .jinja file.
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)
    _portable_tokenizer_class(out_dir / "tokenizer_config.json")
    (out_dir / "README.md").write_text(model_card(stats), encoding="utf-8")


def _portable_tokenizer_class(path: Path) -> None:
    # transformers 5 records its new class name "TokenizersBackend", which 4.x (and the
    # vLLM images built on it) cannot resolve; both versions load the old name.
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def demo_model_fingerprint(model_dir: Path) -> str:
    """sha256 hex digest of ``model_dir/model.safetensors``."""
    digest = hashlib.sha256()
    with (model_dir / "model.safetensors").open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
