"""The runner as the agent starts it: a process with a spec file, stdin held by the agent,
a portal to report to, and several ranks under torch.distributed.run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from compute.agent.procs import free_port, wait_for
from tests.training.runner_helpers import chat_rows, make_spec, metrics, read_events
from training.runner.report import LocalReporter, PortalReporter, Superseded
from training.runner.run import run_spec
from training.runner.spec import parse_spec
from training.runner.train import Trainer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def write_spec(tmp: Path, spec: dict[str, Any]) -> Path:
    path = tmp / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def start_runner(spec_path: Path, *prefix: str) -> subprocess.Popen[bytes]:
    """Start the runner as the agent does: stdin a pipe held open, output to a log file."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "-m", *prefix, "training.runner", "--spec", str(spec_path)]
    with open(spec_path.parent / "runner.log", "wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=environ, stdin=subprocess.PIPE, stdout=log, stderr=log
        )


def finish(proc: subprocess.Popen[bytes], spec_path: Path, timeout_s: float) -> str:
    """Wait for the exit with stdin still open (closing it would stop the runner)."""
    proc.wait(timeout=timeout_s)
    assert proc.stdin is not None
    proc.stdin.close()
    return (spec_path.parent / "runner.log").read_text(errors="replace")[-3000:]


def checkpoint_written(out: Path, step: int) -> bool:
    return any(e["type"] == "checkpoint" and e["step"] >= step for e in read_events(out))


def test_the_runner_dies_with_its_agent_and_its_checkpoint_resumes_exactly(
    tmp_path, tiny_model_dir
):
    spec = {
        "rows": chat_rows(16),
        "adapter": {"dropout": 0.1},
        "hyperparameters": {"n_epochs": 400, "checkpoint_every": 2},
    }
    killed = make_spec(tmp_path / "killed", tiny_model_dir, **spec)
    proc = start_runner(write_spec(tmp_path / "killed", killed))
    out = Path(killed["output_dir"])
    wait_for(lambda: checkpoint_written(out, 2), timeout_s=60, what="first checkpoint", proc=proc)

    proc.stdin.close()  # the agent died: its end of the pipe is gone
    assert proc.wait(timeout=10) == 70
    assert metrics(out)[-1]["step"] < 400 * 4

    files = tmp_path / "resumed" / "files"
    shutil.copytree(out / "checkpoints" / "step-000002", files / "resume")
    resumed = parse_spec(
        make_spec(tmp_path / "resumed", tiny_model_dir, resume={"step": 2, "dir": "resume"}, **spec)
    )
    Trainer(resumed).run(LocalReporter(resumed.output_dir, cancel_after=4))
    whole = parse_spec(make_spec(tmp_path / "whole", tiny_model_dir, **spec))
    Trainer(whole).run(LocalReporter(whole.output_dir, cancel_after=6))

    after = [(m["step"], m["train_loss"]) for m in metrics(resumed.output_dir)]
    assert after == [(m["step"], m["train_loss"]) for m in metrics(whole.output_dir)][2:]


def test_a_failing_run_reports_the_error_and_exits_non_zero(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, train_file="data/missing.jsonl")

    code = run_spec(write_spec(tmp_path, spec))

    assert code == 1
    last = read_events(Path(spec["output_dir"]))[-1]
    assert last["type"] == "message" and last["level"] == "error"
    assert "missing.jsonl" in last["message"]


@pytest.mark.e2e  # the one slow test here: torch.distributed.run starts three interpreters
def test_two_gloo_ranks_train_one_run_and_only_rank_0_reports(tmp_path, tiny_model_dir):
    spec = make_spec(
        tmp_path,
        tiny_model_dir,
        rows=chat_rows(16),
        hyperparameters={"n_epochs": 1, "batch_size": 2, "checkpoint_every": 2},
    )
    path = write_spec(tmp_path, spec)
    proc = start_runner(
        path,
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
    )

    log = finish(proc, path, timeout_s=120)

    assert proc.returncode == 0, log
    out = Path(spec["output_dir"])
    steps = metrics(out)
    assert [m["step"] for m in steps] == [1, 2, 3, 4]  # 16 rows / 2 ranks / batch 2
    assert all(5.5 < m["train_loss"] < 7.0 for m in steps)  # ln(vocab) ≈ 6.2 at the start
    assert steps[-1]["trained_tokens"] > 2 * steps[0]["trained_tokens"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert (out / "result" / "adapter_model.safetensors").exists()


# --- the portal client, against a stand-in HTTP server ----------------------------------


class StandIn(ThreadingHTTPServer):
    """Answers the runner-facing routes as the contract describes and records requests."""

    def __init__(self, answers: dict[str, list[tuple[int, dict[str, Any]]]], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.answers = answers
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        queue = self.answers.get(path) or self.answers.get("*") or [(200, {})]
        return queue.pop(0) if len(queue) > 1 else queue[0]


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        status, answer = self.server.answer(self.path.removeprefix("/api/training/runner/"))
        if (self.command == "POST" and self.path.endswith("/checkpoints")) or self.path.endswith(
            "/result"
        ):
            files = json.loads(body)["files"]
            answer = {
                "uploads": [
                    {"path": f["path"], "url": f"{self.server.url}/put/{f['path']}"} for f in files
                ]
            }
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PUT = _handle

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def stand_in():
    servers: list[StandIn] = []

    def start(answers: dict[str, list[tuple[int, dict[str, Any]]]], port: int = 0) -> StandIn:
        server = StandIn(answers, port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_portal_gets_events_checkpoint_uploads_and_the_result(
    tmp_path, tiny_model_dir, stand_in
):
    server = stand_in({"events": [(503, {}), (200, {"cancel": False})]})
    spec = parse_spec(
        make_spec(
            tmp_path,
            tiny_model_dir,
            rows=chat_rows(8),
            portal=server.url,
            hyperparameters={"checkpoint_every": 2},
        )
    )

    Trainer(spec).run(PortalReporter(server.url, "mrun-secret"))

    posts = [(m, p) for m, p, _, _ in server.requests if not p.startswith("/put/")]
    routes = [p.removeprefix("/api/training/runner/") for _, p in posts]
    assert routes.count("checkpoints") == 2 and routes[-2:] == ["result", "result/complete"]
    assert "checkpoints/2/complete" in routes and "checkpoints/4/complete" in routes
    assert all(
        h["Authorization"] == "Bearer mrun-secret"
        for m, p, h, _ in server.requests
        if not p.startswith("/put/")
    )
    assert all("Authorization" not in h for _, p, h, _ in server.requests if p.startswith("/put/"))
    events = [json.loads(b) for _, p, _, b in server.requests if p.endswith("/events")]
    reported = [
        e["data"]["step"] for body in events for e in body["events"] if e["type"] == "metrics"
    ]
    assert sorted(set(reported)) == [1, 2, 3, 4]  # the 503 answer was retried
    result = next(json.loads(b) for _, p, _, b in server.requests if p.endswith("/result"))
    puts = {p.removeprefix("/put/"): b for m, p, _, b in server.requests if m == "PUT"}
    for f in result["files"]:
        assert hashlib.sha256(puts[f["path"]]).hexdigest() == f["sha256"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        f["path"] for f in result["files"]
    }
    assert [h[0] for h in result["history"]] == [1, 2, 3, 4]


def test_a_cancel_answer_stops_the_run(tmp_path, tiny_model_dir, stand_in):
    server = stand_in({"events": [(200, {"cancel": True})]})
    spec = parse_spec(make_spec(tmp_path, tiny_model_dir, rows=chat_rows(16), portal=server.url))
    reporter = PortalReporter(server.url, "mrun-secret")

    finished = Trainer(spec).run(reporter)

    assert not finished
    assert not any(p.endswith("/result") for _, p, _, _ in server.requests)


@pytest.mark.parametrize("status", [401, 409])
def test_a_refused_token_means_another_attempt_owns_the_job(
    tmp_path, tiny_model_dir, stand_in, status
):
    server = stand_in({"*": [(status, {})]})
    spec = parse_spec(make_spec(tmp_path, tiny_model_dir, rows=chat_rows(8), portal=server.url))

    with pytest.raises(Superseded):
        Trainer(spec).run(PortalReporter(server.url, "mrun-stale"))

    assert len(server.requests) == 1


def test_events_wait_for_a_restarting_portal(stand_in, caplog):
    port = free_port()
    reporter = PortalReporter(f"http://127.0.0.1:{port}", "mrun-secret")
    hello = {"type": "message", "level": "info", "message": "hello"}
    sender = threading.Thread(target=reporter.event, args=(hello,))  # the first event is sent
    with caplog.at_level("WARNING", logger="training.runner.report"):
        sender.start()
        wait_for(lambda: "retrying" in caplog.text, timeout_s=10, what="a refused connection")
        server = stand_in({"events": [(200, {"cancel": True})]}, port=port)
        sender.join(timeout=30)

    bodies = [json.loads(b) for _, p, _, b in server.requests if p.endswith("/events")]
    assert [e["message"] for body in bodies for e in body["events"]] == ["hello"]
    assert reporter.cancelled
