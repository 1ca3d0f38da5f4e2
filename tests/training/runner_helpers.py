"""Tiny datasets and specs for the runner's tests (local mode: no portal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

QUESTIONS = [
    ("Hello, world!", "The quick brown fox jumps over the lazy dog."),
    ("How are you doing today?", "The weather today is sunny with a light breeze."),
    ("Say something about models.", "Open models can be hosted on your own machines."),
    ("What is batching?", "Batching requests together makes inference much faster."),
    ("Summarise.", "A model serves tokens to many users at once."),
    ("你好", "你好，世界！很高兴见到你。"),
    ("天气怎么样？", "今天天气很好，我们去公园散步。"),
    ("Numbers?", "Numbers like 42, 3.14 and 1000 appear in text as well."),
]


def chat_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """``n`` chat rows cycling through :data:`QUESTIONS` (a system turn on every third)."""
    rows = []
    for i in range(offset, offset + n):
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if i % 3 == 0:
            messages.insert(0, {"role": "system", "content": "Answer briefly."})
        rows.append({"messages": messages})
    return rows


def preference_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        _, other = QUESTIONS[(i + 3) % len(QUESTIONS)]
        rows.append(
            {
                "input": {"messages": [{"role": "user", "content": question}]},
                "preferred_output": [{"role": "assistant", "content": answer}],
                "non_preferred_output": [{"role": "assistant", "content": other}],
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def make_spec(
    tmp: Path,
    model_dir: Path,
    *,
    rows: list[dict[str, Any]] | None = None,
    valid: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A spec dict with files written under ``tmp/files``; ``hyperparameters`` and
    ``adapter`` overrides merge into the defaults, other keys replace."""
    files = tmp / "files"
    write_jsonl(files / "data/train.jsonl", rows if rows is not None else chat_rows(16))
    if valid is not None:
        write_jsonl(files / "data/valid.jsonl", valid)
    hp = {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate": 5e-3,
        "max_seq_len": 128,
        "checkpoint_every": 100,
        "eval_every": 100,
    }
    hp.update(overrides.pop("hyperparameters", {}))
    adapter = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}
    adapter.update(overrides.pop("adapter", {}))
    spec = {
        "job": "ftjob-test",
        "attempt": 1,
        "task": "fine_tune",
        "method": "supervised",
        "model_dir": str(model_dir),
        "files_dir": str(files),
        "output_dir": str(tmp / "out"),
        "portal": None,
        "train_file": "data/train.jsonl",
        "validation_file": "data/valid.jsonl" if valid is not None else None,
        "hyperparameters": hp,
        "adapter": adapter,
        "seed": 7,
        "device": "cpu",
        "dtype": "float32",
        "resume": None,
    }
    spec.update(overrides)
    return spec


def read_events(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metrics(output_dir: Path) -> list[dict[str, Any]]:
    return [e["data"] for e in read_events(output_dir) if e["type"] == "metrics"]
