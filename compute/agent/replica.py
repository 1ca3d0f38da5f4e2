"""One engine replica on this node: fetch the model, run the engine, watch it."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from subprocess import Popen
from typing import Any

import httpx

from compute.agent.procs import free_port, sha256_file, spawn, stop

logger = logging.getLogger("compute.agent")

MAX_BACKOFF_S = 30.0
# Engine API keys the agent may itself have been started with: never inherited by engines
# (each engine gets its own replica's secret from its adapter).
SECRET_ENV = ("OPENMAAS_ENGINE_API_KEY", "VLLM_API_KEY", "OPENMAAS_NODE_TOKEN")
HEALTH_TIMEOUT_S = 1.0


class ModelCache:
    """Model versions downloaded once per revision, verified by sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root / "models"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, model: dict[str, Any]) -> Path:
        revision = model["revision"]
        if len(revision) != 64 or not all(c in "0123456789abcdef" for c in revision):
            raise ValueError("bad revision from portal")
        return self.root / revision

    def fetch(self, model: dict[str, Any]) -> Path:
        target = self.path(model)
        if (target / ".complete").exists():
            return target
        staging = target.with_name(target.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0)) as client:
            for item in model["files"]:
                self._fetch_file(client, staging, item)
        (staging / ".complete").write_text("ok")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target

    @staticmethod
    def _fetch_file(client: httpx.Client, root: Path, item: dict[str, Any]) -> None:
        rel = PurePosixPath(item["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"unsafe path from portal: {rel}")
        dest = root / rel
        if dest.exists() and sha256_file(dest) == item["sha256"]:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        digest = hashlib.sha256()
        with client.stream("GET", item["url"]) as response, tmp.open("wb") as out:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != item["sha256"]:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"checksum mismatch for {rel}")
        tmp.replace(dest)


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

    The engine gets the replica's secret (never started without one) and sees exactly the
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

    def report(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "port": self.port,
            "pid": self.proc.pid if self.proc else None,
            "restarts": self.restarts,
            "error": self.error[-4000:],
        }

    def step(self) -> bool:
        """Advance the replica's own state machine; True if its status changed."""
        before = (self.status, self.port)
        if self.proc is None:
            self._advance_start()
        elif self.proc.poll() is not None:
            self._on_exit(self.proc.returncode)
        elif self.status == "starting" and self._healthy():
            self.status, self.error = "ready", ""
            logger.info("replica %s ready on port %s", self.id, self.port)
        return before != (self.status, self.port)

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
