"""pytest plugin: the test session runs against real PostgreSQL, Redis and SeaweedFS.

Unless ``DATABASE_URL``, ``REDIS_URL`` and ``S3_ENDPOINT`` are all set, the session
starts its own from the pip-installed binaries in a temporary folder, before Django's
settings are read, and stops them when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from portal.devstack.services import BackingServices

_stack: BackingServices | None = None
_root: Path | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: list[str]) -> None:
    global _stack, _root
    # Threads serving live requests must not keep connections that block the test
    # database's teardown.
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
    if all(os.environ.get(v) for v in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT")):
        return
    _root = Path(tempfile.mkdtemp(prefix="openmaas-test-"))
    _stack = BackingServices(_root, durable=False, say=lambda msg: None)
    try:
        os.environ.update(_stack.start_all())
    except BaseException:
        _stack.stop_all()
        raise
    os.environ.setdefault("OPENMAAS_DEVSTACK_DIR", str(_root))
    os.environ.setdefault("S3_BUCKET_PREFIX", "openmaas-test")


def pytest_unconfigure(config: Any) -> None:
    if _stack is not None:
        _stack.stop_all()
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)
