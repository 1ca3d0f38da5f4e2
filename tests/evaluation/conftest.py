"""Fixtures of the evaluation tests: small task YAMLs written here (a multiple-choice
task over a dataset hub version, a generation task over a built-in file), a real CPU
engine of the tiny model, an endpoint naming it, and a stand-in endpoint that answers
garbage (the endpoint under test, a real HTTP server)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from compute.agent.procs import free_port, spawn, stop, wait_for
from compute.models import ReplicaStatus
from compute.services.deployments import deploy_model
from compute.services.nodes import create_node
from compute.services.scheduler import reconcile_pool
from evaluation.models import EvalRun
from evaluation.services import catalog, endpoints
from portal.services.registry import import_model_dir
from tests.compute.conftest import ENGINE_API_KEY, SERVED_NAME, EngineProcess

MC_ROWS = [
    {
        "question": "What do people use to cut paper?",
        "choices": ["a spoon", "scissors"],
        "answer": 1,
    },
    {"question": "Which season follows winter?", "choices": ["spring", "autumn"], "answer": 0},
    {"question": "Where does a fish live?", "choices": ["in a tree", "in water"], "answer": 1},
    {"question": "What is ice made of?", "choices": ["water", "sand"], "answer": 0},
    {"question": "Which is hot?", "choices": ["the sun", "the snow"], "answer": 0},
    {"question": "What do cows drink?", "choices": ["milk", "water"], "answer": 1},
    {"question": "How many legs has a dog?", "choices": ["four", "two"], "answer": 0},
    {"question": "What colour is grass?", "choices": ["red", "green"], "answer": 1},
    {"question": "Which one can fly?", "choices": ["a bird", "a stone"], "answer": 0},
    {"question": "When do people sleep?", "choices": ["at noon", "at night"], "answer": 1},
    {"question": "What falls from clouds?", "choices": ["rain", "bread"], "answer": 0},
    {"question": "Which is bigger?", "choices": ["an ant", "a whale"], "answer": 1},
]
MC_TASK = """\
task: {name}
description: A tiny two-choice common-sense task for the tests.
tags: [en, test]
dataset:
  hub: {dataset}
  layout: mc_jsonl
output_type: multiple_choice
doc_to_text: "Question: {{{{ question }}}}\\nAnswer:"
doc_to_choice: "{{{{ choices }}}}"
doc_to_target: "{{{{ answer }}}}"
metrics: [{{name: acc}}, {{name: acc_norm}}]
"""
GEN_TASK = """\
task: {name}
description: Additions, generated; the first number of the answer is compared.
dataset:
  builtin: arithmetic_en.jsonl
output_type: generate_until
doc_to_text: "Question: {{{{ question }}}}\\nAnswer:"
doc_to_target: "{{{{ answer }}}}"
generation: {{max_tokens: 8, until: ["\\n"]}}
filters: [{{name: regex, pattern: "(-?[0-9.,]+)", group: 1}}, {{name: take_first}}]
metrics: [{{name: exact_match}}]
limit: {limit}
"""
SUITE = """\
suite: {name}
description: Both test tasks.
tasks:
  - {{task: {first}}}
  - {{task: {second}, weight: 2}}
aggregation: weighted
"""


def mc_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(orjson.dumps(row).decode() + "\n" for row in rows)


@pytest.fixture
def mc_dataset(owner: Any) -> str:
    """olivia/mc-data@1: the multiple-choice rows as a ready dataset hub version."""
    from datasets.services.repos import create_repo
    from tests.datasets.conftest import add_version

    repo = create_repo(owner.user, owner.user, "mc-data", visibility="private")
    version = add_version(repo, owner.user, {"test.jsonl": mc_jsonl(MC_ROWS)})
    return f"olivia/mc-data@{version.number}"


@pytest.fixture
def mc_task(owner: Any, mc_dataset: str) -> Any:
    text = MC_TASK.format(name="tiny-mc", dataset=mc_dataset)
    return catalog.create_task(owner.user, owner.user, text, "private")


@pytest.fixture
def gen_task(owner: Any) -> Any:
    return catalog.create_task(
        owner.user, owner.user, GEN_TASK.format(name="tiny-add", limit=6), "private"
    )


@pytest.fixture
def suite(owner: Any, mc_task: Any, gen_task: Any) -> Any:
    text = SUITE.format(name="tiny-suite", first="tiny-mc", second="olivia/tiny-add")
    return catalog.create_suite(owner.user, owner.user, text, "private")


@pytest.fixture
def engine(engine_server: EngineProcess) -> EngineProcess:
    """The session's CPU engine of the tiny model (a real subprocess, tests/conftest.py)."""
    return engine_server


@pytest.fixture
def engine_endpoint(owner: Any, engine: Any) -> Any:
    """olivia/tiny: an endpoint naming the engine directly, with its key."""
    return endpoints.create_endpoint(
        owner.user, owner.user, "tiny", engine.base_url + "/v1", SERVED_NAME, ENGINE_API_KEY
    )


class GarbageHandler(BaseHTTPRequestHandler):
    """Answers every request 200 with JSON that is no OpenAI answer."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"choices": [{"text": "🙃", "logprobs": None}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def garbage_url() -> Iterator[str]:
    """A real HTTP server that answers every completion with garbage."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), GarbageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def run_now(run: EvalRun) -> EvalRun:
    """What the Celery worker does with a queued run: run it to the end, re-read it."""
    from evaluation.tasks import run_eval

    run_eval(run.pk)
    run.refresh_from_db()
    return run


@pytest.fixture
def finish() -> Callable[[EvalRun], EvalRun]:
    return run_now


@contextlib.contextmanager
def served_on_pool(
    portal_url: str, model_dir: Path, name: str, visibility: str, admin: Any, work: Path
) -> Iterator[Any]:
    """``model_dir`` imported as ``name`` and served by one replica on a real node agent
    of the live portal at ``portal_url``; yields the model version once it is ready."""
    version = import_model_dir(model_dir, name, actor=None, visibility=visibility)
    deployment = deploy_model(admin.user, version.repo, replicas=1)
    _, token = create_node(admin.user, f"eval-node-{version.repo.name}")
    argv = [sys.executable, "-m", "compute.agent", "--portal", portal_url]
    env = {**os.environ, "OPENMAAS_NODE_TOKEN": token}
    log = work / "agent.log"
    agent = spawn([*argv, "--work-dir", str(work)], log=log, env=env)

    def ready() -> bool:
        reconcile_pool()
        return deployment.replica_set.filter(status=ReplicaStatus.READY).exists()

    try:
        wait_for(ready, timeout_s=180, what="a ready replica", proc=agent, log=log, ignore=())
        yield version
    finally:
        stop(agent, grace_s=20)


Reply = tuple[int, Any]  # status and a JSON-able body, or bytes sent as they are


class StandInEndpoint:
    """An HTTP server in a thread; ``answer(body) -> (status, payload)`` decides each reply."""

    def __init__(self, answer: Callable[[dict[str, Any]], Reply]) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.bodies.append(body)
                status, payload = endpoint.answer(body)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in() -> Iterator[Callable[[Callable[[dict[str, Any]], Reply]], StandInEndpoint]]:
    started: list[StandInEndpoint] = []

    def start(answer: Callable[[dict[str, Any]], Reply]) -> StandInEndpoint:
        started.append(StandInEndpoint(answer))
        return started[-1]

    yield start
    for endpoint in started:
        endpoint.close()
