"""The local stack launcher behind ``make run``.

Starts the backing services (unless ``DATABASE_URL``/``REDIS_URL``/``S3_ENDPOINT`` point
elsewhere), migrates, bootstraps the admin, a demo key, the demo model, a node token
and a deployment, then runs web, worker, beat and one node agent until SIGINT/SIGTERM,
when every child is stopped. All state lives under ``root`` and is reused next time.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from compute.agent.procs import port_open, spawn, stop, wait_for
from portal.devstack.services import BackingServices
from portal.gateway.server import HTTP_PROTOCOL

DEMO_MODEL = "openmaas/demo-tiny"


def say(message: str) -> None:
    print(f"[openmaas] {message}", flush=True)


class Launcher:
    def __init__(
        self, root: Path, *, host: str, port: int, demo_steps: int | None, with_agent: bool
    ) -> None:
        self.root, self.host, self.port = root, host, port
        self.demo_steps, self.with_agent = demo_steps, with_agent
        self.services = BackingServices(root, durable=True, say=say)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        self.started_at = datetime.now(UTC)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            env = self.prepare()
            self.start_processes(env)
            self.wait_until_serving(env)
            return self.supervise()
        except KeyboardInterrupt:
            return 0
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
            say(f"failed: {exc}")
            return 1
        finally:
            self.shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt

    # Preparation ------------------------------------------------------------------

    def prepare(self) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        if port_open(self.port, self.host):
            raise RuntimeError(f"{self.url} is already in use (another `make run`?)")
        env = self.environment()
        say("applying database migrations")
        self.manage(env, "migrate", "--noinput")
        self.manage(env, "collectstatic", "--noinput")
        say("bootstrapping: admin, demo API key, demo model, node token, deployment")
        args = ["devstack_bootstrap", "--root", str(self.root)]
        if self.demo_steps is not None:
            args += ["--demo-steps", str(self.demo_steps)]
        self.manage(env, *args, stream=True)
        return env

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._start_missing(env))
        env.setdefault("SECRET_KEY", self._secret("secret_key"))
        env["DJANGO_SETTINGS_MODULE"] = "portal.settings"
        env["OPENMAAS_DEVSTACK_DIR"] = str(self.root)
        env["PUBLIC_URL"] = self.url
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _start_missing(self, env: dict[str, str]) -> dict[str, str]:
        """Start the services whose variable is unset; return their variables."""
        started: dict[str, str] = {}
        if "DATABASE_URL" not in env:
            started["DATABASE_URL"] = self.services.start_postgres()
        if "REDIS_URL" not in env:
            started["REDIS_URL"] = self.services.start_redis()
        if "S3_ENDPOINT" not in env:
            started.update(self.services.start_seaweedfs())
        return started

    def _secret(self, name: str) -> str:
        path = self.root / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    def manage(self, env: dict[str, str], *args: str, stream: bool = False) -> None:
        argv = [sys.executable, "manage.py", *args]
        if stream:
            subprocess.run(argv, env=env, check=True)
        else:
            subprocess.run(argv, env=env, check=True, capture_output=True)

    # Processes --------------------------------------------------------------------

    def start_processes(self, env: dict[str, str]) -> None:
        logs = self.root / "logs"
        py = sys.executable
        self._start(
            "web",
            [
                py,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--loop",
                "uvloop",
                "--http",
                HTTP_PROTOCOL,
                "--no-access-log",
            ],
            env,
            logs,
        )
        self._start(
            "worker",
            [
                py,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-c",
                "2",
                "--loglevel",
                "INFO",
                "-n",
                "openmaas@%h",
            ],
            env,
            logs,
        )
        self._start(
            "beat",
            [
                py,
                "-m",
                "celery",
                "-A",
                "portal",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(self.root / "celerybeat-schedule"),
            ],
            env,
            logs,
        )
        wait_for(
            lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200,
            timeout_s=60,
            what="web",
            proc=self.children[0][1],
            log=logs / "web.log",
        )
        say(f"web is up on {self.url}")
        if self.with_agent:
            token = (self.root / "node_token").read_text().strip()
            agent_env = {
                k: v
                for k, v in env.items()
                if k
                not in ("DATABASE_URL", "REDIS_URL", "S3_SECRET_KEY", "S3_ACCESS_KEY", "SECRET_KEY")
            }
            agent_env["OPENMAAS_NODE_TOKEN"] = token
            self._start(
                "agent",
                [
                    py,
                    "-m",
                    "compute.agent",
                    "--portal",
                    self.url,
                    "--work-dir",
                    str(self.root / "agent"),
                ],
                agent_env,
                logs,
            )

    def _start(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        say(f"starting {name} (log: {logs / (name + '.log')})")
        self.children.append((name, spawn(argv, log=logs / f"{name}.log", env=env)))

    def wait_until_serving(self, env: dict[str, str]) -> None:
        key = (self.root / "demo_api_key").read_text().strip()
        if not self.with_agent:
            self._banner(key)
            return
        say(f"waiting for the node agent to start a replica of {DEMO_MODEL}")
        deadline, last = time.monotonic() + 300, ""
        while time.monotonic() < deadline:
            self._check_children()
            state = self._replica_state(key)
            if state == "ready":
                self._banner(key)
                return
            if state != last:
                say(f"  replica: {state}")
                last = state
            time.sleep(0.5)
        raise TimeoutError(f"no replica of {DEMO_MODEL} became ready; see {self.root / 'logs'}")

    def _replica_state(self, key: str) -> str:
        try:
            response = httpx.get(
                f"{self.url}/api/compute/deployments/",
                headers={"Authorization": f"Bearer {key}"},
                timeout=5,
            )
            deployments = response.json()["results"]
        except (httpx.HTTPError, ValueError, KeyError):
            return "web not answering yet"
        for dep in deployments:
            if dep["model"] == DEMO_MODEL and dep["status"] == "active":
                return self._summarise(dep["replica_set"])
        return "no deployment"

    def _summarise(self, replicas: list[dict[str, Any]]) -> str:
        """'ready' once a replica became ready after this launch (not a stale row)."""
        fresh = [
            r
            for r in replicas
            if r["status"] == "ready"
            and r["ready_at"]
            and datetime.fromisoformat(r["ready_at"]) >= self.started_at
        ]
        if fresh:
            return "ready"
        # A row still 'ready' from the previous run waits for the agent to restart it.
        states = ["from last run" if r["status"] == "ready" else r["status"] for r in replicas]
        return ",".join(states) or "pending"

    def _banner(self, key: str) -> None:
        password = (self.root / "admin_password").read_text().strip()
        say("=" * 60)
        say(f"openmaas is running at {self.url}")
        say(f"  admin:    {self.url}/admin/  user 'admin', password '{password}'")
        say(f"  API key:  {key}   (also in {self.root / 'demo_api_key'})")
        say(f"  try:      OpenAI(base_url='{self.url}/v1', api_key=KEY) with model '{DEMO_MODEL}'")
        say("Press Ctrl-C to stop everything.")
        say("=" * 60)
        # A machine-readable line last, for scripts and tests that wait for readiness.
        print(json.dumps({"event": "ready", "url": self.url, "model": DEMO_MODEL}), flush=True)

    def _check_children(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see "
                    f"{self.root / 'logs' / (name + '.log')}"
                )

    def supervise(self) -> int:
        while True:
            self._check_children()
            time.sleep(0.5)

    def shutdown(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.children or self.services.procs:
            say("stopping")
        for name, proc in reversed(self.children):
            stop(proc, grace_s=15 if name == "agent" else 10)
        self.children.clear()
        self.services.stop_all()
