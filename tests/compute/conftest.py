"""Helpers for the compute engine tests: start and stop a CPU engine over the tiny model
(``tiny_model_dir``). The session's one engine (``engine_server``, ``engine_client``,
``engine_url``) is in tests/conftest.py, so other folders share it. Nothing here touches
the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from compute.agent.procs import free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVED_NAME = "tiny-llama"
MAX_MODEL_LEN = 256
STARTUP_DEADLINE_S = 90.0
ENGINE_API_KEY = "test-engine-secret"  # the engine refuses to start without one


def health_status(base_url: str) -> int | None:
    """Status of ``GET /health``, or ``None`` while nothing answers on the port."""
    try:
        return httpx.get(base_url + "/health", timeout=1.0).status_code
    except httpx.TransportError:
        return None


@dataclass
class EngineProcess:
    """A running engine subprocess and where to reach it."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_engine(
    model_dir: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None
) -> EngineProcess:
    """Start ``python -m compute.engines.transformers_server`` and wait for /health (200);
    ``env`` adds to its environment (a watermark key, say)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "compute.engines.transformers_server",
        "--model", str(model_dir), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN), *extra,
    ]  # fmt: skip
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OPENMAAS_ENGINE_API_KEY": ENGINE_API_KEY,
        **(env or {}),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=full_env
        )
    engine = EngineProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for(
            lambda: health_status(engine.base_url) == 200,
            timeout_s=STARTUP_DEADLINE_S,
            what="engine",
            proc=proc,
            log=log_path,
            interval_s=0.1,
        )
    except (RuntimeError, TimeoutError):
        stop_engine(engine)
        raise
    return engine


def stop_engine(engine: EngineProcess, timeout: float = 20.0) -> int:
    """SIGTERM the engine and wait for it; kills it if it does not exit in time."""
    if engine.proc.poll() is None:
        engine.proc.send_signal(signal.SIGTERM)
        try:
            engine.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            engine.proc.kill()
            engine.proc.wait()
    return engine.proc.returncode


@pytest.fixture(scope="module")
def client(engine_client: httpx.Client) -> httpx.Client:
    """The engine's client (the engine suites' name for it; shadows Django's here)."""
    return engine_client
