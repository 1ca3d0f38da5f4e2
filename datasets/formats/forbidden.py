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


def _positions(block: bytes, needle: bytes, start: int) -> Iterator[int]:
    pos = block.find(needle, start)
    while pos >= 0:
        yield pos
        pos = block.find(needle, pos + 1)


class ForbiddenTokens:
    """Finds forbidden tokens: first fast over raw JSON Lines bytes (`lines_with`), then
    precisely in the parsed rows those lines hold (`find`)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = tuple(sorted({token for token in tokens if token}, key=len, reverse=True))
        groups: dict[bytes, list[bytes]] = {}
        for token in self.tokens:
            needle = token.encode()
            groups.setdefault(needle[:1], []).append(needle)
        self._groups = {first: tuple(needles) for first, needles in groups.items()}
        self._pattern = re.compile("|".join(re.escape(token) for token in self.tokens) or "$^")

    def lines_with(self, block: bytes) -> set[int]:
        """0-based indexes of the lines of ``block`` holding a token as raw bytes.

        Tokens are grouped by their first byte, found with memchr-speed single-byte
        `bytes.find` and confirmed with `startswith`: far faster than a regex or one
        search per token. A token spelled with JSON escapes (``\\u003c``) is not seen.
        """
        hits: list[int] = []
        for first, needles in self._groups.items():
            hits += self._group_hits(block, first, needles)
        return self._line_indexes(block, sorted(hits))

    @staticmethod
    def _group_hits(block: bytes, first: bytes, needles: tuple[bytes, ...]) -> list[int]:
        hits: list[int] = []
        # A first byte common in the data ("[" in JSON) would cost a Python step per
        # occurrence: past one per 512 bytes, search for each whole token instead.
        budget = len(block) >> 9
        pos = block.find(first)
        while pos >= 0:
            budget -= 1
            if budget < 0:
                return hits + [p for needle in needles for p in _positions(block, needle, pos)]
            if any(block.startswith(needle, pos) for needle in needles):
                hits.append(pos)
            pos = block.find(first, pos + 1)
        return hits

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
