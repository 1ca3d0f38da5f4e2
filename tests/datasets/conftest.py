"""Helpers for dataset-file tests: files written from rows or raw lines, and a tiny
word-level tokenizer built on the spot (no downloads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from datasets.formats import TokenCounter

WORDS = ("hello", "world", "hi", "there", "be", "brief", "user", "assistant", "system")


@pytest.fixture
def jsonl(tmp_path: Path) -> Callable[..., Path]:
    """Writes rows (dicts are dumped, bytes written as they are) one per line."""

    def write(*rows: Any, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        lines = [row if isinstance(row, bytes) else orjson.dumps(row) for row in rows]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path

    return write


@pytest.fixture
def tiny_tokens(tmp_path: Path) -> Callable[[int | None], TokenCounter]:
    """A TokenCounter over a word-level tokenizer: one token per word or punctuation
    run, with ``<|fence|>`` as its special token."""
    vocab = {"[UNK]": 0, **{word: index + 1 for index, word in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<|fence|>"])
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))

    def build(context_length: int | None = None) -> TokenCounter:
        return TokenCounter.from_file(path, context_length)

    return build
