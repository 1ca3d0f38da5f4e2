"""Hanging up on a request mid-generation, and what the engine's counters say after."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from compute.agent.procs import wait_for
from tests.compute.conftest import SERVED_NAME


def send_and_hang_up(base_url: str, path: str, body: dict[str, Any], started: Callable) -> None:
    """POST ``body`` on a raw connection, wait until ``started()``, then close it unread."""
    url = urlsplit(base_url)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
    )
    auth = body.pop("_authorization", None)
    if auth:
        head += f"Authorization: {auth}\r\n"
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + b"\r\n" + data)
        wait_for(started, timeout_s=30, what="generation to start", interval_s=0.02, ignore=())


def abandon_and_measure(
    engine: httpx.Client, target_url: str, path: str, body: dict[str, Any]
) -> dict[str, int]:
    """Hang up on a long non-streamed request; the engine's counters once it has ended."""
    before = engine.get("/v1/engine/stats").json()

    def generating() -> bool:
        stats = engine.get("/v1/engine/stats").json()
        return stats["generation_tokens_total"] > before["generation_tokens_total"]

    send_and_hang_up(target_url, path, body, generating)

    def ended() -> dict[str, Any] | None:
        stats = engine.get("/v1/engine/stats").json()
        return stats if stats["requests_finished"] > before["requests_finished"] else None

    after = wait_for(ended, timeout_s=60, what="the abandoned request to end", ignore=())
    return {
        "finished": after["requests_finished"] - before["requests_finished"],
        "generated": after["generation_tokens_total"] - before["generation_tokens_total"],
    }


LONG: dict[str, Any] = {
    "model": SERVED_NAME,
    "messages": [{"role": "user", "content": "Write a very long story."}],
    "max_tokens": 200,
    "ignore_eos": True,
}
