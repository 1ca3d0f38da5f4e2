"""A stand-in for the portal's side of the agent protocol, for driving a real node agent.

A small HTTP server in a thread: it answers ``register`` and ``heartbeat`` with a desired
state the test scripts (``replicas``, ``workloads``), records every heartbeat body, and
serves blobs at ``/blobs/<key>`` in place of the object store's presigned URLs. It stands in
for the portal only; everything on the node side stays real.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NODE_TOKEN = "stand-in-node-token"
HEARTBEAT_INTERVAL_S = 0.2


class StandInPortal:
    def __init__(self) -> None:
        self.replicas: list[dict[str, Any]] = []
        self.workloads: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInPortal:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def file(self, path: str, data: bytes, *, sha256: str | None = None) -> dict[str, Any]:
        """Serve ``data`` and return its listing entry (``sha256`` overrides the digest)."""
        digest = hashlib.sha256(data).hexdigest()
        key = f"{digest}-{len(self.blobs)}"
        self.blobs[key] = data
        url = f"{self.url}/blobs/{key}"
        return {"path": path, "size": len(data), "sha256": sha256 or digest, "url": url}

    def directory(self, root: Path) -> list[dict[str, Any]]:
        """Listing entries for every file under ``root`` (a model or adapter directory)."""
        return [
            self.file(p.relative_to(root).as_posix(), p.read_bytes())
            for p in sorted(root.rglob("*"))
            if p.is_file()
        ]

    def workload_reports(self, wid: int, attempt: int) -> Iterator[dict[str, Any]]:
        with self.lock:
            beats = list(self.heartbeats)
        for beat in beats:
            for report in beat.get("workloads", []):
                if report["id"] == wid and report["attempt"] == attempt:
                    yield report

    def last_workload(self, wid: int, attempt: int) -> dict[str, Any] | None:
        reports = list(self.workload_reports(wid, attempt))
        return reports[-1] if reports else None

    def last_replica(self, rid: int) -> dict[str, Any] | None:
        with self.lock:
            beats = list(self.heartbeats)
        for beat in reversed(beats):
            for report in beat.get("replicas", []):
                if report["id"] == rid:
                    return dict(report)
        return None


def _handler(portal: StandInPortal) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            data = portal.blobs.get(self.path.removeprefix("/blobs/"))
            if data is None:
                self._send(404, b"{}")
            else:
                self._send(200, data, "application/octet-stream")

        def do_POST(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {NODE_TOKEN}":
                self._send(401, b'{"detail": "bad node token"}')
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/compute/agent/register":
                portal.registrations.append(body)
                answer: dict[str, Any] = {"node": "stand-in", "id": 1}
            elif self.path == "/api/compute/agent/heartbeat":
                with portal.lock:
                    portal.heartbeats.append(body)
                    answer = {"replicas": portal.replicas, "workloads": portal.workloads}
            else:
                self._send(404, b"{}")
                return
            answer["heartbeat_interval_s"] = HEARTBEAT_INTERVAL_S
            self._send(200, json.dumps(answer).encode())

    return Handler
