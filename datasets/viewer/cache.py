"""A local, size-bounded cache of the Parquet copies kept in the object store.

Each key gets its own folder under ``root`` holding the file and whatever is built next
to it (the search index), so eviction frees both at once. Several processes may share a
root: a per-key ``flock`` makes one of them download while the others wait, files appear
by atomic rename, and eviction renames a folder away before deleting it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

USED_MARK = ".used"


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


class ParquetCache:
    """Files fetched by key into ``root``, least recently used evicted beyond
    ``max_bytes``. Entries used in the last ``grace_s`` seconds are never evicted (another
    request may be reading them), so the cache may exceed its bound for that long."""

    def __init__(self, root: Path, max_bytes: int, grace_s: float = 60.0) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        root.mkdir(parents=True, exist_ok=True)

    def _entry(self, key: str) -> tuple[Path, Path]:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        name = re.sub(r"[^\w.-]", "_", key.rsplit("/", 1)[-1]).lstrip(".") or "file"
        folder = self.root / digest
        return folder, folder / name

    def path(self, key: str, fetch: Callable[[Path], None]) -> Path:
        """The local path of ``key``'s file; on a miss ``fetch(tmp_path)`` writes it first
        (its exceptions propagate and leave nothing behind). Safe to call concurrently
        from threads and processes: one fetch per key."""
        folder, target = self._entry(key)
        fetched = False
        if not target.exists():
            with _locked(self.root / f"{folder.name}.lock"):
                if not target.exists():
                    self._fetch(folder, target, fetch)
                    fetched = True
        (folder / USED_MARK).touch()
        if fetched:  # only a miss grows the cache; a hit needs no scan of it
            self.evict()
        return target

    def _fetch(self, folder: Path, target: Path, fetch: Callable[[Path], None]) -> None:
        tmp = self.root / f".{folder.name}.{os.getpid()}.tmp"
        try:
            fetch(tmp)
            folder.mkdir(exist_ok=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every entry, least recently used first."""
        found = []
        for folder in self.root.iterdir():
            if folder.is_dir() and not folder.name.startswith("."):
                mark = folder / USED_MARK
                used = mark.stat().st_mtime if mark.exists() else 0.0
                found.append((used, _size(folder), folder))
        return sorted(found, key=lambda entry: entry[0])

    def evict(self) -> int:
        """Remove least recently used entries until the cache fits; returns bytes freed."""
        freed = 0
        with _locked(self.root / ".evict.lock"):
            entries = self._entries()
            excess = sum(size for _, size, _ in entries) - self.max_bytes
            for used, size, folder in entries:
                if excess <= 0 or used > time.time() - self.grace_s:
                    break
                trash = self.root / f".trash-{folder.name}-{os.getpid()}"
                os.rename(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
                excess -= size
                freed += size
        return freed
