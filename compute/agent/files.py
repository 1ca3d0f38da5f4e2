"""Downloads from the portal's presigned URLs: safe relative paths, verified by sha256.

Used for model versions and adapters (the :class:`~compute.agent.replica.ModelCache`) and for
a workload's own files (datasets, a checkpoint to resume from).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from compute.agent.procs import sha256_file

CHUNK = 1 << 20


def safe_relative(path: str) -> PurePosixPath:
    """``path`` as a relative path that stays under its root; ValueError otherwise."""
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts or "\\" in path:
        raise ValueError(f"unsafe path from portal: {path!r}")
    return rel


def fetch_file(client: httpx.Client, root: Path, item: dict[str, Any]) -> Path:
    """Download ``item`` (``{"path", "sha256", "url"}``) to ``root/path``, or keep the file
    already there when its digest matches. A mismatch leaves nothing behind and raises."""
    rel = safe_relative(str(item["path"]))
    dest = root / rel
    if dest.exists() and sha256_file(dest) == item["sha256"]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    digest = hashlib.sha256()
    with client.stream("GET", item["url"]) as response, tmp.open("wb") as out:
        response.raise_for_status()
        for chunk in response.iter_bytes(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != item["sha256"]:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"checksum mismatch for {rel}")
    tmp.replace(dest)
    return dest


def fetch_files(root: Path, items: Iterable[dict[str, Any]]) -> None:
    """Fetch every item under ``root`` (see :func:`fetch_file`); paths are checked first, so
    a listing with one unsafe path downloads nothing."""
    items = list(items)
    for item in items:
        safe_relative(str(item["path"]))
    root.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        for item in items:
            fetch_file(client, root, item)


class ModelCache:
    """Model versions (and adapters) downloaded once per revision, verified by sha256.

    Fetches run on the agent's thread pool: one lock per revision keeps two of them (two
    replicas of one model, an adapter on two replicas) from sharing a staging directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, model: dict[str, Any]) -> Path:
        revision = model["revision"]
        if len(revision) != 64 or not all(c in "0123456789abcdef" for c in revision):
            raise ValueError("bad revision from portal")
        return self.root / revision

    def fetch(self, model: dict[str, Any]) -> Path:
        target = self.path(model)
        with self._guard:
            lock = self._locks.setdefault(target.name, threading.Lock())
        with lock:
            if (target / ".complete").exists():
                return target
            staging = target.with_name(target.name + ".partial")
            fetch_files(staging, model["files"])
            (staging / ".complete").write_text("ok")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            return target
