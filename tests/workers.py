"""A real Celery worker process for tests that need one: it runs against the test
database (Django's ``test_…`` name) and the session's Redis broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from compute.agent.procs import spawn, stop, wait_for


@contextmanager
def celery_worker(log_dir: Path, name: str = "test") -> Iterator[subprocess.Popen[bytes]]:
    """Start ``celery -A portal worker --pool=solo`` and wait until it is ready; stopped
    (gracefully, then killed) on exit unless the test already killed it."""
    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    database = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    log = log_dir / f"worker-{name}.log"
    argv = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo"]
    worker = spawn(
        [*argv, "--loglevel=INFO", "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h"],
        log=log,
        env={**os.environ, "DATABASE_URL": database},
    )
    try:
        wait_for(
            lambda: "ready." in log.read_text(errors="replace"),
            timeout_s=60,
            what="the Celery worker",
            proc=worker,
            log=log,
        )
        yield worker
    finally:
        stop(worker, grace_s=15)
