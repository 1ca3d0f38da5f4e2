"""Where the runner's events, checkpoints and result go: the portal or local files.

:class:`PortalReporter` POSTs to ``{portal}/api/training/runner/…`` with the run's bearer
token, batching metric events to at most about one request a second; files go to the
presigned PUT URLs the portal hands out. :class:`LocalReporter` (``portal`` null: tests,
benchmarks) appends events to ``output_dir/events.jsonl`` and leaves files on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0
RETRY_FOR_S = 600.0  # how long a restarting portal is waited for before the run fails


class Superseded(Exception):
    """The portal refused the token (401) or the attempt (409): another attempt owns the
    job now, so this one must stop at once without reporting anything more."""


class Reporter(Protocol):
    def event(self, event: dict[str, Any], progress: float | None = None) -> None: ...
    def flush(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...
    def checkpoint(self, step: int, metrics: dict[str, Any], directory: Path) -> None: ...
    def result(self, body: dict[str, Any], directory: Path) -> None: ...


def sha256_file(path: Path) -> str:
    # Not compute.agent.procs.sha256_file: sub-platforms share code only through services.
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def describe_files(directory: Path) -> list[dict[str, Any]]:
    """``[{"path", "size", "sha256"}]`` of every file under ``directory``, sorted by path."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return [
        {
            "path": p.relative_to(directory).as_posix(),
            "size": p.stat().st_size,
            "sha256": sha256_file(p),
        }
        for p in files
    ]


class LocalReporter:
    """Events as JSON lines in ``events.jsonl``; checkpoints and results stay where they are.

    ``cancel_after`` (tests) makes :attr:`cancelled` turn true once that many metric events
    have been reported, as a portal's ``cancel: true`` would.
    """

    def __init__(self, output_dir: Path, cancel_after: int | None = None) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / "events.jsonl"
        self._cancel_after = cancel_after
        self._metrics = 0

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def event(self, event: dict[str, Any], progress: float | None = None) -> None:
        self._metrics += event.get("type") == "metrics"
        self._write({**event, "progress": progress})

    def flush(self) -> None:
        return None

    @property
    def cancelled(self) -> bool:
        return self._cancel_after is not None and self._metrics >= self._cancel_after

    def checkpoint(self, step: int, metrics: dict[str, Any], directory: Path) -> None:
        self._write({"type": "checkpoint", "step": step, "metrics": metrics, "dir": str(directory)})

    def result(self, body: dict[str, Any], directory: Path) -> None:
        self._write({"type": "result", **body, "dir": str(directory)})


class PortalReporter:
    """The runner-facing API of the portal (see the contract); retries connection errors
    and 5xx answers with backoff for up to :data:`RETRY_FOR_S`; raises :class:`Superseded`
    on 401/409."""

    def __init__(self, portal: str, token: str, client: httpx.Client | None = None) -> None:
        self.base = portal.rstrip("/") + "/api/training/runner/"
        self.client = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
        self.headers = {"Authorization": f"Bearer {token}"}
        self._pending: list[dict[str, Any]] = []
        self._progress: float | None = None
        self._last_flush = 0.0
        self._cancelled = False

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried; a ``file`` keyword is streamed afresh on every try."""
        delay, deadline = 0.5, time.monotonic() + RETRY_FOR_S
        file: Path | None = kwargs.pop("file", None)
        while True:
            if file is not None:
                size = file.stat().st_size
                kwargs.update(content=_chunks(file), headers={"Content-Length": str(size)})
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in (401, 409):
                    raise Superseded(f"{url}: {response.status_code}")
                if response.status_code < 500:
                    response.raise_for_status()
                    return response
                problem = f"HTTP {response.status_code}"
            if time.monotonic() + delay > deadline:
                raise ConnectionError(f"{method} {url} failed for {RETRY_FOR_S:.0f} s: {problem}")
            log.warning("%s %s: %s; retrying in %.1f s", method, url, problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._send("POST", self.base + path, json=body, headers=self.headers)
        answer = response.json() if response.content else {}
        return answer if isinstance(answer, dict) else {}

    def event(self, event: dict[str, Any], progress: float | None = None) -> None:
        self._pending.append(event)
        if progress is not None:
            self._progress = progress
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        body = {"progress": self._progress, "events": self._pending}
        self._pending = []
        self._last_flush = time.monotonic()
        answer = self._post("events", body)
        self._cancelled = self._cancelled or bool(answer.get("cancel"))

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _upload(
        self, create: str, complete: str, body: dict[str, Any], directory: Path
    ) -> dict[str, Any]:
        """POST ``create`` with the file list, PUT each file asked for, POST ``complete``."""
        answer = self._post(create, {**body, "files": describe_files(directory)})
        for upload in answer.get("uploads", []):
            # The presigned URL carries its own authorisation; no bearer token goes there.
            self._send("PUT", upload["url"], file=directory / upload["path"])
        return self._post(complete, {})

    def checkpoint(self, step: int, metrics: dict[str, Any], directory: Path) -> None:
        self.flush()
        body = {"step": step, "metrics": metrics}
        self._upload("checkpoints", f"checkpoints/{step}/complete", body, directory)

    def result(self, body: dict[str, Any], directory: Path) -> None:
        self.flush()
        self._upload("result", "result/complete", body, directory)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(1 << 20), b"")
