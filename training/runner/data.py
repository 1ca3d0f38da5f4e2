"""Training rows → token ids and labels; batches padded to their longest row.

Supervised rows are OpenAI chat rows (``messages``; per-assistant-message ``weight`` 0/1)
or ``prompt``/``completion`` rows (a user turn and an assistant turn, as the dataset hub's
chat pipeline reads them). The base model's chat template renders the conversation;
only the tokens of assistant messages (their content and the template's end-of-turn
marker) carry a label, every other position is ``IGNORE``.

Why padding and not packing: packing several rows into one sequence needs attention
that stops at row boundaries (varlen flash attention or per-row position ids), which the
CPU attention paths do not provide; without it rows would attend to each other. Rows here
are chat turns of similar length, so the padding waste is small, and each batch is padded
only to its own longest row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IGNORE = -100  # the label value that no loss is computed for


@dataclass(frozen=True)
class Example:
    """One tokenized row; ``labels[i]`` is ``input_ids[i]`` where loss applies, else IGNORE."""

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Pair:
    """A DPO row: the same prompt with the preferred and the other completion."""

    chosen: Example
    rejected: Example


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file, skipping blank lines."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"{path.name} line {number}: a row must be an object")
                yield row


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    """The message as the template sees it: no ``weight``, content never None."""
    out = {k: v for k, v in message.items() if k != "weight"}
    if out.get("content") is None:
        out["content"] = ""
    return out


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, gen: bool) -> str:
    text = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=gen
    )
    return str(text)


def _opening_start(tokenizer: Any, rendered: str, tools: Any) -> int:
    """Where the content of a conversation's opening assistant turn starts in ``rendered``:
    after the template's assistant header (what a generation prompt adds after a user
    turn), so that a default system prompt or the header itself carry no loss."""
    probe = [{"role": "user", "content": "?"}]
    without = _render(tokenizer, probe, tools, gen=False)
    header = _render(tokenizer, probe, tools, gen=True)[len(without) :]
    at = rendered.find(header) if header else -1
    return at + len(header) if at >= 0 else 0


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None
) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return the text and the character spans that carry loss.

    An assistant message's span runs from the end of the prompt rendered with a
    generation prompt to the end of the conversation rendered up to that message,
    without trailing whitespace (the template's newline after the end-of-turn marker is
    never generated). Messages with ``weight`` 0 have no span. Raises ValueError when
    the template does not render prefixes as prefixes (then spans cannot be found).
    """
    clean = [_clean(m) for m in messages]
    text = _render(tokenizer, clean, tools, gen=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        upto = _render(tokenizer, clean[: i + 1], tools, gen=False).rstrip()
        if i:
            prompt = _render(tokenizer, clean[:i], tools, gen=True)
            start = len(prompt) if upto.startswith(prompt) else -1
        else:  # transformers renders no empty conversation, so no prompt to measure
            start = _opening_start(tokenizer, upto, tools)
        if start < 0 or not text.startswith(upto):
            raise ValueError("the chat template does not render a conversation's prefixes")
        if len(upto) > start:
            spans.append((start, len(upto)))
    return text, spans


def encode_chat(
    tokenizer: Any, messages: list[dict[str, Any]], max_len: int, tools: Any = None
) -> Example:
    """Tokenize a chat with loss on assistant spans; truncated to ``max_len`` tokens."""
    text, spans = assistant_spans(tokenizer, messages, tools)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])[:max_len]
    labels = [IGNORE] * len(ids)
    for i, (start, end) in enumerate(enc["offset_mapping"][: len(ids)]):
        if end > start and any(a <= start < b for a, b in spans):
            labels[i] = ids[i]
    return Example(ids, labels)


def _as_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" in row:
        return list(row["messages"])
    if "prompt" in row and "completion" in row:
        return [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
    raise ValueError("a supervised row needs 'messages' or 'prompt' and 'completion'")


def encode_supervised(tokenizer: Any, row: dict[str, Any], max_len: int) -> Example:
    """One supervised row (chat or prompt/completion) → :class:`Example`."""
    return encode_chat(tokenizer, _as_messages(row), max_len, row.get("tools"))


def encode_preference(tokenizer: Any, row: dict[str, Any], max_len: int) -> Pair:
    """One DPO row → the prompt followed by each completion, loss on the completion only."""
    prompt = [{**m, "weight": 0} for m in row["input"]["messages"]]
    tools = row["input"].get("tools")

    def side(key: str) -> Example:
        answer = {**row[key][0], "role": "assistant", "weight": 1}
        return encode_chat(tokenizer, [*prompt, answer], max_len, tools)

    return Pair(side("preferred_output"), side("non_preferred_output"))


def _trains(example: Example) -> bool:
    return any(label != IGNORE for label in example.labels)


def load_examples(tokenizer: Any, path: Path, method: str, max_len: int) -> list[Any]:
    """Encode every row of ``path``; rows left with no loss tokens (all weight 0, or cut
    off by ``max_len``) are dropped. Returns Examples (supervised) or Pairs (dpo)."""
    out: list[Any] = []
    for row in read_jsonl(path):
        if method == "dpo":
            pair = encode_preference(tokenizer, row, max_len)
            if _trains(pair.chosen) and _trains(pair.rejected):
                out.append(pair)
        else:
            example = encode_supervised(tokenizer, row, max_len)
            if _trains(example):
                out.append(example)
    if not out:
        raise ValueError(f"{path.name} has no row with tokens to train on")
    return out


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask``, ``labels``."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_pairs(pairs: Sequence[Pair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows, in one padded batch (one forward pass)."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's row indices for ``epoch``: a permutation seeded by ``seed + epoch``,
    dealt round-robin to the ranks, cut so that every rank gets the same count."""
    gen = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    per_rank = n // world
    return order[rank : per_rank * world : world]


def batches(indices: list[int], batch_size: int) -> list[list[int]]:
    """Split ``indices`` into micro-batches (the last one may be shorter)."""
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
