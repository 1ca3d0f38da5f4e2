"""Fixtures of the evaluation tests: small task YAMLs written here (a multiple-choice
task over a dataset hub version, a generation task over a built-in file), a real CPU
engine of the tiny model, an endpoint naming it, and a stand-in endpoint that answers
garbage (the endpoint under test, a real HTTP server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from compute.agent.procs import free_port
from evaluation.models import EvalRun
from evaluation.services import catalog, endpoints
from tests.compute.conftest import ENGINE_API_KEY, SERVED_NAME, start_engine, stop_engine

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


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The CPU engine of the tiny model as a real subprocess (one per module)."""
    log_path = tmp_path_factory.mktemp("eval-runs-engine") / "engine.log"
    process = start_engine(tiny_model_dir, log_path, "--max-batch-size", "8", "--num-threads", "1")
    yield process
    stop_engine(process)


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
