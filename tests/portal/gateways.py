"""Gateway worker processes for tests: real ``uvicorn portal.asgi:application``
subprocesses sharing the test database and Redis, plus rows that give them a replica."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from compute.agent.procs import free_port, wait_for
from compute.models import Deployment, Node, Replica, ReplicaStatus
from portal.gateway.server import HTTP_PROTOCOL

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_replica(served_name: str, url: str, secret: str | None = None) -> Replica:
    """A ready replica of ``served_name`` at ``url`` on a fresh ready node (``secret``:
    the engine's API key, for engines that check it)."""
    name = f"n-{uuid.uuid4().hex[:8]}"
    node = Node.objects.create(name=name, token_hash=uuid.uuid4().hex * 2, status="ready")
    return Replica.objects.create(
        deployment=Deployment.objects.get(served_name=served_name),
        node=node,
        status=ReplicaStatus.READY,
        url=url,
        **({"secret": secret} if secret else {}),
    )


def _test_database_url() -> str:
    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


def _up(url: str) -> bool:
    return httpx.get(url + "/v1/models", timeout=2).status_code == 401


@contextmanager
def gateway_processes(log_dir: Path, count: int = 1, **env: str) -> Iterator[list[str]]:
    """``count`` gateway worker processes on free ports, started together; ``env``
    overrides settings. Yields their base URLs."""
    full_env = {**os.environ, "DATABASE_URL": _test_database_url(), **env}
    started: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for _ in range(count):
            port = free_port()
            log = log_dir / f"gateway-{port}.log"
            command = [
                sys.executable, "-m", "uvicorn", "portal.asgi:application",
                "--host", "127.0.0.1", "--port", str(port), "--http", HTTP_PROTOCOL,
                "--log-level", "warning",
            ]  # fmt: skip
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    command, cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
                )
            started.append((proc, f"http://127.0.0.1:{port}", log))
        for proc, url, log in started:
            wait_for(lambda u=url: _up(u), timeout_s=90, what="gateway", proc=proc, log=log)
        yield [url for _, url, _ in started]
    finally:
        for proc, _, _ in started:
            proc.terminate()
        for proc, _, _ in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
