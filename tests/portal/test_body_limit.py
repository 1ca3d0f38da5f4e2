"""Bodies over the limit are refused before Django reads them to disk: a declared
length at once, a chunked body once it passes the limit."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import httpx


def raw_request(base: str, head: str, body: bytes = b"") -> tuple[int, str]:
    """Send ``head`` (and ``body``) on a fresh connection; the status and the answer."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"request_too_large" in answer:
                break
    text = answer.decode("latin-1")
    return int(text.split(" ", 2)[1]), text


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    live_portal: str,
) -> None:
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer sk-whatever\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {10**12}\r\n"
    )
    status, text = raw_request(live_portal, head)
    assert status == 413
    assert '"code": "request_too_large"' in text and '"error"' in text


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(
    live_portal: str, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096  # other paths: twice this

    def chunks() -> Any:
        for _ in range(64):
            yield b"x" * 1024

    answer = httpx.post(f"{live_portal}/api/auth/login/", content=chunks(), timeout=20)
    assert answer.status_code == 413
    assert answer.json()["code"] == "request_too_large"


def test_a_body_under_the_limit_reaches_django(live_portal: str) -> None:
    answer = httpx.post(f"{live_portal}/api/auth/login/", json={"username": "x", "password": "y"})
    assert answer.status_code in (400, 401, 403)
