"""A LiteLLM proxy in front of the bench's stub engine, for comparison.

LiteLLM lives in its own virtual environment (``.bench/litellm-venv``, git-ignored),
created on first use from PyPI with a pinned ``litellm[proxy]``. The proxy runs with
one worker on 127.0.0.1, a master key, no database and one model routed to the stub
(``openai/...`` with ``api_base`` = the stub). It is kept offline: the model cost map
is the local copy (``LITELLM_LOCAL_MODEL_COST_MAP``), telemetry is off, and every HTTP
proxy variable points at a local trap (:class:`ProxyTrap`) that refuses and records
any attempt to reach a host other than loopback, so an outbound call fails at once
and shows up in the report instead of hanging the start.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from compute.agent.procs import free_port, spawn, stop, wait_for

VERSION = "1.102.4"  # the newest whose dependencies resolve from the registry here
# litellm[proxy]==VERSION and its dependencies, frozen (pip freeze of a working install).
REQUIREMENTS = Path(__file__).with_name("litellm-requirements.txt")
MASTER_KEY = "sk-bench-litellm-master"
MODEL = "bench-stub"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, say: Callable[[str], None]) -> None:
    """Create ``venv`` with :data:`REQUIREMENTS` (``litellm[proxy]==VERSION``) unless it
    already has them."""
    stamp = (
        venv / f".litellm-{VERSION}-{hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]}"
    )
    if stamp.exists():
        return
    if not venv_python(venv).exists():
        say(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    say(f"installing litellm[proxy]=={VERSION} into {venv} (first time: a minute or two)")
    done = subprocess.run(
        [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        raise RuntimeError("pip could not install LiteLLM: " + " / ".join(errors[-3:]))
    stamp.touch()


def config_yaml(stub_url: str) -> str:
    """The proxy's config. JSON is YAML, so no YAML writer is needed here."""
    return json.dumps(
        {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": f"openai/{MODEL}",
                        "api_base": f"{stub_url}/v1",
                        "api_key": "sk-stub",
                    },
                    # Zero prices: no cost-map look-up miss (and warning) per request.
                    "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0},
                }
            ],
            "litellm_settings": {"telemetry": False, "drop_params": True},
            "general_settings": {"master_key": MASTER_KEY},
        },
        indent=2,
    )


@dataclass
class ProxyTrap:
    """A TCP listener that HTTP(S)_PROXY points at: it records each request line
    (``CONNECT host:443 …``) and closes, so an outbound call fails fast and is seen."""

    attempts: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    line = conn.recv(1024).split(b"\r\n", 1)[0].decode(errors="replace")
                except OSError:
                    line = "(no request line)"
                self.attempts.append(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


def offline_env(base: dict[str, str], trap: ProxyTrap) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.lower().endswith("_proxy")}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = trap.url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",  # do not read a .env file
            "DISABLE_ADMIN_UI": "True",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": "",
        }
    )
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


def version_of(venv: Path) -> str:
    done = subprocess.run(
        [
            str(venv_python(venv)),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or "unknown"


@contextmanager
def litellm_proxy(
    venv: Path,
    stub_url: str,
    folder: Path,
    base_env: dict[str, str],
    ready: Callable[[str], bool],
    trap: ProxyTrap,
    prefix: Sequence[str] = (),
) -> Iterator[str]:
    """The proxy for the duration of the block; yields its URL once ``ready(url)``.
    ``prefix``: put before the command (e.g. ``taskset -c 1``)."""
    config = folder / "litellm.yaml"
    config.write_text(config_yaml(stub_url))
    port = free_port()
    log = folder / "logs" / "litellm.log"
    argv = [
        *prefix,
        str(venv / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]
    proc = spawn(argv, log=log, env=offline_env(base_env, trap), cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        wait_for(lambda: ready(url), timeout_s=180, what="LiteLLM proxy", proc=proc, log=log)
        print(f"[bench] LiteLLM started in {time.monotonic() - started:.0f} s", flush=True)
        yield url
    finally:
        stop(proc)


def default_venv(root: Path) -> Path:
    return Path(os.environ.get("BENCH_LITELLM_VENV", root / ".bench" / "litellm-venv"))
