"""One engine replica on this node: fetch the model, run the engine, watch it."""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx

from compute.agent.adapters import AdapterSync
from compute.agent.files import ModelCache
from compute.agent.procs import free_port, spawn, stop

logger = logging.getLogger("compute.agent")

MAX_BACKOFF_S = 30.0
# Engine API keys the agent may itself have been started with: never inherited by engines
# (each engine gets its own replica's secret from its adapter).
SECRET_ENV = (
    "OPENMAAS_ENGINE_API_KEY",
    "VLLM_API_KEY",
    "OPENMAAS_NODE_TOKEN",
    "OPENMAAS_WATERMARK_KEY",
)
HEALTH_TIMEOUT_S = 1.0


# Engine arguments only the platform sets (from the replica's GPU reservation).
RESERVED_ARGS = ("gpu_ids", "gpu_count")


@dataclass(frozen=True)
class Launch:
    """How to start one engine: its argv and its whole environment."""

    argv: list[str]
    env: dict[str, str]


def engine_launch(
    desired: Mapping[str, Any],
    model_dir: Path,
    host: str,
    port: int,
    base_env: Mapping[str, str],
    python: str = sys.executable,
) -> Launch:
    """The command and environment of a replica's engine (a pure function of its inputs).

    The engine gets the replica's secret (never started without one), the deployment's
    watermark key when it plants the watermark (both in its environment), and sees exactly the
    GPUs the portal reserved for it: ``CUDA_VISIBLE_DEVICES`` is always set, to the
    assigned indices, or empty for a CPU replica. Raises ValueError or LookupError.
    """
    from compute.engines import get_engine
    from compute.engines.base import EngineSpec

    secret = str(desired.get("secret") or "")
    if not secret:
        raise ValueError("the portal sent no secret; an engine never starts without one")
    gpus = [int(i) for i in desired.get("gpu_indices") or []]
    engine = str(desired["engine"])
    extra = {k: v for k, v in dict(desired.get("engine_args") or {}).items()}
    for key in RESERVED_ARGS:
        extra.pop(key, None)
    if engine == "vllm":
        extra["gpu_ids"] = gpus
    spec = EngineSpec(
        model_dir=str(model_dir),
        served_model_name=str(desired["served_name"]),
        host=host,
        port=port,
        extra_args=extra,
        python=python,
        api_key=secret,
        watermark_key=str(desired.get("watermark_key") or ""),
    )
    adapter = get_engine(engine)
    argv = list(adapter.build_command(spec))
    env = {k: v for k, v in base_env.items() if k not in SECRET_ENV}
    env.update(adapter.build_env(spec))
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
    return Launch(argv, env)


@dataclass(frozen=True)
class Listen:
    """Where engines listen: an interface and, optionally, a range of allowed ports (so a
    firewall or container can publish exactly those)."""

    host: str = "127.0.0.1"
    ports: tuple[int, int] | None = None

    def pick_port(self) -> int:
        if self.ports is None:
            return free_port(self.host)
        low, high = self.ports
        candidates = list(range(low, high + 1))
        random.shuffle(candidates)
        for port in candidates:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((self.host, port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port in {low}-{high}")


class LocalReplica:
    """Drives one replica: fetching → starting → ready; failed → restart with backoff."""

    def __init__(
        self,
        desired: dict[str, Any],
        cache: ModelCache,
        pool: ThreadPoolExecutor,
        logs: Path,
        listen: Listen,
    ) -> None:
        self.id: int = desired["id"]
        self.desired = desired
        self.cache, self.pool, self.logs, self.listen = cache, pool, logs, listen
        self.bind_host = listen.host
        self.status = "starting"
        self.error = ""
        self.restarts = 0
        self.port: int | None = None
        self.proc: Popen[bytes] | None = None
        self.fetching: Future[Path] | None = None
        self.retry_at = 0.0
        self.adapters = AdapterSync(cache, pool)
        self.adapters.want(desired.get("adapters"))

    def update(self, desired: dict[str, Any]) -> None:
        """The portal's latest word on a running replica: only its adapters may change."""
        self.adapters.want(desired.get("adapters"))

    def report(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "port": self.port,
            "pid": self.proc.pid if self.proc else None,
            "restarts": self.restarts,
            "error": self.error[-4000:],
            "adapters": self.adapters.names(),
        }

    def step(self) -> bool:
        """Advance the replica's own state machine; True if its status changed."""
        before = (self.status, self.port)
        adapters_changed = False
        if self.proc is None:
            self._advance_start()
        elif self.proc.poll() is not None:
            self._on_exit(self.proc.returncode)
        elif self.status == "starting" and self._healthy():
            self.status, self.error = "ready", ""
            logger.info("replica %s ready on port %s", self.id, self.port)
        if self.status == "ready":
            url = f"http://{self.bind_host}:{self.port}"
            adapters_changed = self.adapters.step(url, str(self.desired.get("secret") or ""))
        return adapters_changed or before != (self.status, self.port)

    def _advance_start(self) -> None:
        if time.monotonic() < self.retry_at:
            return
        if self.fetching is None:
            self.fetching = self.pool.submit(self.cache.fetch, self.desired["model"])
            return
        if not self.fetching.done():
            return
        future, self.fetching = self.fetching, None
        try:
            model_dir = future.result()
        except Exception as exc:
            self._fail(f"model download failed: {exc}")
            return
        self._spawn(model_dir)

    def _spawn(self, model_dir: Path) -> None:
        self.port = self.listen.pick_port()
        try:
            launch = engine_launch(self.desired, model_dir, self.bind_host, self.port, os.environ)
        except (LookupError, ValueError) as exc:
            self.port = None
            self._fail(f"cannot start engine: {exc}")
            return
        logger.info("starting replica %s: %s", self.id, " ".join(launch.argv))
        self.adapters.reset()  # a new engine process has none loaded
        self.proc = spawn(launch.argv, log=self.logs / f"replica-{self.id}.log", env=launch.env)
        self.status = "starting"

    def _healthy(self) -> bool:
        try:
            response = httpx.get(
                f"http://{self.bind_host}:{self.port}/health", timeout=HEALTH_TIMEOUT_S
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _on_exit(self, code: int) -> None:
        self.adapters.reset()
        self.proc = None
        self.port = None
        log = self.logs / f"replica-{self.id}.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        self._fail(f"engine exited with code {code}\n{tail}")

    def _fail(self, error: str) -> None:
        self.status, self.error = "failed", error
        self.restarts += 1
        backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** min(self.restarts, 6))
        self.retry_at = time.monotonic() + backoff
        logger.warning(
            "replica %s failed (restart in %.1fs): %s",
            self.id,
            backoff,
            error.splitlines()[0] if error else "",
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, grace_s=10)
            self.proc = None
        self.status = "stopped"
