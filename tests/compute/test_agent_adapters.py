"""The agent keeps the LoRA adapters the portal wants loaded in each ready replica.

The reconcile logic (:class:`~compute.agent.adapters.AdapterSync`) runs against a stand-in
engine that answers vLLM's runtime LoRA API and records the calls; the end-to-end test runs
the real agent, a real transformers engine replica and a peft adapter built here, with the
portal a stand-in (tests/compute/stand_in_portal.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from compute.agent.adapters import AdapterSync
from compute.agent.core import Agent
from compute.agent.files import ModelCache
from compute.agent.procs import wait_for
from tests.compute.stand_in_portal import NODE_TOKEN, StandInPortal

SECRET = "replica-secret"


def poll(check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    return wait_for(check, timeout_s=timeout_s, what=what, interval_s=0.05, ignore=())


class StandInEngine:
    """Answers ``/health`` and vLLM's load/unload adapter calls like the real engines do
    (the same name and path again is a no-op, another path for a loaded name is a 400,
    unloading an unknown name a 404); ``fail_loads`` failures first, ``gate`` holds loads."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[float, str, str]] = []
        self.fail_loads = 0
        self.gate = threading.Event()
        self.gate.set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _engine_handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def load(self, name: str, path: str) -> tuple[int, str]:
        self.gate.wait(30)
        root = Path(path)
        if not (root / "adapter_config.json").is_file():
            return 400, f"{path} is not an adapter directory"
        if self.fail_loads > 0:
            self.fail_loads -= 1
            return 500, "out of memory, try later"
        if self.loaded.get(name, path) != path:
            return 400, f"{name} is loaded from another path"
        self.loaded[name] = path
        return 200, "Success"

    def unload(self, name: str) -> tuple[int, str]:
        if self.loaded.pop(name, None) is None:
            return 404, f"{name} cannot be found"
        return 200, "Success"

    def actions(self) -> list[tuple[str, str]]:
        return [(action, name) for _, action, name in self.calls]


def _engine_handler(engine: StandInEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200 if self.path == "/health" else 404, "{}")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.headers.get("Authorization") != f"Bearer {SECRET}":
                self._send(401, "bad key")
                return
            name = body["lora_name"]
            if self.path == "/v1/load_lora_adapter":
                engine.calls.append((time.monotonic(), "load", name))
                self._send(*engine.load(name, body["lora_path"]))
            elif self.path == "/v1/unload_lora_adapter":
                engine.calls.append((time.monotonic(), "unload", name))
                self._send(*engine.unload(name))
            else:
                self._send(404, "no such route")

    return Handler


@pytest.fixture
def portal() -> Iterator[StandInPortal]:
    with StandInPortal() as stand_in:
        yield stand_in


@pytest.fixture
def engine() -> Iterator[StandInEngine]:
    stand_in = StandInEngine()
    yield stand_in
    stand_in.gate.set()
    stand_in.server.shutdown()
    stand_in.server.server_close()


@pytest.fixture
def sync(tmp_path: Path) -> Iterator[AdapterSync]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield AdapterSync(ModelCache(tmp_path / "agent"), pool)
    pool.shutdown(wait=True, cancel_futures=True)


def adapter(portal: StandInPortal, name: str, weights: bytes = b"w1") -> dict[str, Any]:
    files = [
        portal.file("adapter_config.json", b'{"peft_type": "LORA", "r": 8}'),
        portal.file("adapter_model.safetensors", weights),
    ]
    revision = hashlib.sha256(name.encode() + weights).hexdigest()
    return {"name": name, "revision": revision, "files": files}


def converge(sync: AdapterSync, engine: StandInEngine, done: Callable[[], bool], what: str) -> None:
    """Step the sync as the agent loop does until ``done``."""
    poll(lambda: (sync.step(engine.url, SECRET), done())[1], what)


def test_wanted_adapters_are_fetched_and_loaded_and_dropped_ones_unloaded(sync, engine, portal):
    first, second = adapter(portal, "ft:acme/tiny:olivia::ftjob-1"), adapter(portal, "ft:b", b"w2")
    sync.want([first, second])

    converge(sync, engine, lambda: len(sync.names()) == 2, "both adapters to load")

    assert sync.names() == sorted([first["name"], second["name"]])
    path = Path(engine.loaded[first["name"]])
    assert path.name == first["revision"] and path.is_absolute()
    assert (path / "adapter_model.safetensors").read_bytes() == b"w1"
    assert (Path(engine.loaded["ft:b"]) / "adapter_model.safetensors").read_bytes() == b"w2"

    sync.want([second])

    converge(sync, engine, lambda: sync.names() == ["ft:b"], "the dropped adapter to unload")
    assert list(engine.loaded) == ["ft:b"]
    assert engine.actions()[-1] == ("unload", first["name"])


def test_loads_run_off_the_loop_and_failures_are_retried_with_backoff(sync, engine, portal):
    engine.gate.clear()
    engine.fail_loads = 2
    sync.want([adapter(portal, "ft:a")])

    poll(lambda: (sync.step(engine.url, SECRET), engine.calls)[1], "a load to start")
    started = time.monotonic()
    assert sync.step(engine.url, SECRET) is False  # the engine holds the load: step does not
    assert time.monotonic() - started < 0.5 and sync.names() == []
    engine.gate.set()

    converge(sync, engine, lambda: sync.names() == ["ft:a"], "the adapter to load at last")

    times = [t for t, action, _ in engine.calls if action == "load"]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.9  # 1 s, then 2 s
    assert sync.errors == {}


def test_a_restarted_engine_gets_its_adapters_again(sync, engine, portal):
    sync.want([adapter(portal, "ft:a")])
    converge(sync, engine, lambda: sync.names() == ["ft:a"], "the adapter to load")

    engine.loaded.clear()  # the engine process died and came back empty
    sync.reset()

    assert sync.names() == []
    converge(sync, engine, lambda: sync.names() == ["ft:a"], "the adapter to load again")
    assert "ft:a" in engine.loaded and engine.actions() == [("load", "ft:a")] * 2


def test_a_new_revision_under_the_same_name_replaces_the_old(sync, engine, portal):
    old, new = adapter(portal, "ft:a", b"v1"), adapter(portal, "ft:a", b"v2")
    sync.want([old])
    converge(sync, engine, lambda: sync.names() == ["ft:a"], "v1 to load")

    sync.want([new])

    converge(sync, engine, lambda: sync.loaded == {"ft:a": new["revision"]}, "v2 to load")
    assert engine.actions() == [("load", "ft:a"), ("unload", "ft:a"), ("load", "ft:a")]
    assert (Path(engine.loaded["ft:a"]) / "adapter_model.safetensors").read_bytes() == b"v2"


# --- end to end: the real agent and a real transformers engine replica -----------------


def build_lora(base: Path, out: Path) -> Path:
    """A peft LoRA adapter of the tiny model with non-zero weights (so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture
def agent(portal: StandInPortal, tmp_path: Path) -> Iterator[Agent]:
    node = Agent(portal.url, NODE_TOKEN, tmp_path / "agent")
    thread = threading.Thread(target=node.run, name="agent-loop", daemon=True)
    thread.start()
    yield node
    node.stop_requested = True
    thread.join(60)


def test_real_engine_replica_serves_the_wanted_adapter_and_again_after_a_restart(
    portal, agent, tiny_model_dir, tmp_path
):
    files = portal.directory(build_lora(tiny_model_dir, tmp_path / "lora"))
    name = "ft:acme/tiny-chat:olivia:support:ftjob-abc"
    lora = {"name": name, "revision": hashlib.sha256(b"lora").hexdigest(), "files": files}
    model_files = portal.directory(tiny_model_dir)
    replica = {
        "id": 1,
        "status": "starting",
        "served_name": "acme/tiny-chat",
        "engine": "transformers",
        "engine_args": {"num_threads": 1},
        "gpu_indices": [],
        "secret": SECRET,
        "model": {
            "version_id": 1,
            "revision": hashlib.sha256(b"m").hexdigest(),
            "files": model_files,
        },
        "adapters": [],
    }
    portal.replicas = [replica]
    ready = poll(lambda: _ready(portal), "the replica to be ready", timeout_s=120)
    url = f"http://127.0.0.1:{ready['port']}"
    auth = {"Authorization": f"Bearer {SECRET}"}
    portal.replicas = [{**replica, "adapters": [lora]}]

    poll(lambda: (_ready(portal) or {}).get("adapters") == [name], "the adapter to load", 60)
    body = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    chat = httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=60)
    assert chat.status_code == 200, chat.text
    assert name in _served(url, auth)

    os.kill(ready["pid"], signal.SIGKILL)
    poll(lambda: (portal.last_replica(1) or {}).get("status") == "failed", "the crash report")
    again = poll(lambda: (r := _ready(portal)) and r["adapters"] == [name] and r, "a reload", 120)
    assert again["pid"] != ready["pid"]
    assert name in _served(f"http://127.0.0.1:{again['port']}", auth)

    portal.replicas = [replica]

    poll(lambda: (_ready(portal) or {}).get("adapters") == [], "the adapter to unload", 60)
    assert name not in _served(f"http://127.0.0.1:{again['port']}", auth)


def _ready(portal: StandInPortal) -> dict[str, Any] | None:
    report = portal.last_replica(1)
    return report if report and report["status"] == "ready" else None


def _served(url: str, auth: dict[str, str]) -> list[str]:
    models = httpx.get(f"{url}/v1/models", headers=auth, timeout=30).json()["data"]
    return [m["id"] for m in models]
