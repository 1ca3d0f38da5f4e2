"""Forbidden special tokens: chat-template markers that must not appear inside training
text (a model trained on them learns to end or forge turns)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

DEFAULT_FORBIDDEN = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|begin_of_text|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<s>",
    "</s>",
    "[gMASK]",
    "<sop>",
    "<eop>",
)


def string_paths(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(path, string)`` for every string in ``value``: ``messages[1].content``."""
    if isinstance(value, str):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, f"{prefix}[{index}]")


class ForbiddenTokens:
    """Finds forbidden tokens: first fast over raw JSON Lines bytes (`lines_with`), then
    precisely in the parsed rows those lines hold (`find`)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = tuple(sorted({token for token in tokens if token}, key=len, reverse=True))
        self._needles = [token.encode() for token in self.tokens]
        self._pattern = re.compile("|".join(re.escape(token) for token in self.tokens) or "$^")

    def lines_with(self, block: bytes) -> set[int]:
        """0-based indexes of the lines of ``block`` holding a token as raw bytes.

        One `bytes.find` per token runs at memory speed, far faster than a regex
        alternation. A token spelled with JSON escapes (``\\u003c``) is not seen here.
        """
        hits: list[int] = []
        for needle in self._needles:
            pos = block.find(needle)
            while pos >= 0:
                hits.append(pos)
                line_end = block.find(b"\n", pos)
                pos = -1 if line_end < 0 else block.find(needle, line_end)
        return self._line_indexes(block, sorted(hits))

    @staticmethod
    def _line_indexes(block: bytes, positions: list[int]) -> set[int]:
        lines: set[int] = set()
        line = start = 0
        for pos in positions:
            line += block.count(b"\n", start, pos)
            start = pos
            lines.add(line)
        return lines

    def find(self, row: Any) -> tuple[str, str] | None:
        """``(field, token)`` of the first forbidden token in the row's strings."""
        for path, text in string_paths(row):
            match = self._pattern.search(text)
            if match:
                return path, match.group()
        return None
