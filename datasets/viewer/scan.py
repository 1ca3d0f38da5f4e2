"""A resumable substring search over a search index: the matches of one text, found in
split order, block by block, and only in the blocks the gram bitsets allow.

Finding a page needs only its matches, but an exact total needs every block scanned: on
a million rows a common word costs more than a page request may take. So each call
scans until its page is known, then counts on for at most a time budget; the scan keeps
its place, and the next call for the same text (a later page) counts on from there.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from datasets.viewer.grams import candidate_blocks
from datasets.viewer.index import SearchIndex

COUNT_BUDGET_S = 0.1


class Scan:
    """The matches of ``needle`` (lowercased like the index's text) in ``index``. Safe to
    share between threads: one of them advances it at a time."""

    def __init__(self, index: SearchIndex, needle: str) -> None:
        self.index = index
        self.needle = needle
        self.blocks = candidate_blocks(index.bitsets, needle).tolist()
        self.scanned = 0
        self.parts: list[np.ndarray] = []
        self.count = 0
        self.lock = threading.Lock()

    @property
    def done(self) -> bool:
        """Whether every candidate block has been scanned (the count is exact)."""
        return self.scanned >= len(self.blocks)

    def advance(self, wanted: int, budget_s: float = COUNT_BUDGET_S) -> tuple[np.ndarray, bool]:
        """Scan until at least ``wanted`` matches are known (or none are left), then on
        until ``budget_s`` seconds have passed since the call began or the scan is done.
        Returns every match found so far, ascending, and whether that is all of them."""
        deadline = time.perf_counter() + budget_s
        with self.lock:
            while not self.done and (self.count < wanted or time.perf_counter() < deadline):
                found = self.index.matches(self.blocks[self.scanned], self.needle)
                self.scanned += 1
                if found.size:
                    self.parts.append(found)
                    self.count += found.size
            if len(self.parts) > 1:
                self.parts = [np.concatenate(self.parts)]
            found = self.parts[0] if self.parts else np.zeros(0, np.int64)
            return found, self.done
