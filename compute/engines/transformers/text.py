"""Text from tokens: incremental detokenizing, stop strings, raw bytes of vocabulary pieces."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    A delta is only released once the decoded text no longer ends in U+FFFD, so a
    multi-byte character split over several byte-level tokens is never emitted in pieces.
    ``flush`` releases whatever is still held (which may then be a genuine U+FFFD).
    """

    def __init__(self, tokenizer: Any, context_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids = list(context_ids)
        self._prefix = 0  # start of the window that is decoded each time
        self._read = len(self._ids)  # end of the text already released

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Append a token and return the text it makes visible (maybe empty)."""
        self._ids.append(token_id)
        released = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        if len(current) <= len(released) or current.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return current[len(released) :]

    def flush(self) -> str:
        """Release the held text, complete or not."""
        released = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return current[len(released) :]


class StopChecker:
    """Cuts generated text at the first stop string.

    Text that could be the beginning of a stop string is held back until it is known not
    to be one, so a stop string is never partly emitted.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return ``(text safe to emit, stopped)``."""
        if not self._stops:
            return text, False
        buf = self._pending + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        keep = self._partial_match_len(buf)
        self._pending = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Release held text at the end of generation."""
        pending, self._pending = self._pending, ""
        return pending

    def _partial_match_len(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        longest = max(len(s) for s in self._stops) - 1
        for k in range(min(longest, len(buf)), 0, -1):
            suffix = buf[-k:]
            if any(s.startswith(suffix) for s in self._stops):
                return k
        return 0


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2 style): one printable character per byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in chars)
    for n, b in enumerate(shifted):
        chars[b] = chr(256 + n)
    return {c: b for b, c in chars.items()}


_BYTE_LEVEL = _byte_level_alphabet()


def token_bytes(piece: str | None) -> bytes | None:
    """Raw bytes of a vocabulary piece that encodes bytes: ``<0xNN>`` or byte-level BPE."""
    if not piece:
        return None
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        with contextlib.suppress(ValueError):
            return bytes([int(piece[3:5], 16)])
    if all(c in _BYTE_LEVEL for c in piece):
        return bytes(_BYTE_LEVEL[c] for c in piece)
    return None
