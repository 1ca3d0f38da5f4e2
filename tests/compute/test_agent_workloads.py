"""A real node agent runs workloads the portal asks for: inputs fetched and verified, the
entry started with its token in the environment, its outcome reported, and it stopped when
the portal no longer wants it, or when the agent dies. The portal is a stand-in
(tests/compute/stand_in_portal.py); the agent, its downloads and its children are real."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from compute.agent.core import Agent
from compute.agent.procs import spawn, stop, wait_for
from compute.agent.workload import workload_launch
from tests.compute.stand_in_portal import NODE_TOKEN, StandInPortal

FAKE_RUNNER = "tests.compute.fake_runner"
TOKEN = "mrun-7.1.secret-hmac"


def poll(check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    return wait_for(check, timeout_s=timeout_s, what=what, interval_s=0.05, ignore=())


@pytest.fixture
def portal() -> Iterator[StandInPortal]:
    with StandInPortal() as stand_in:
        yield stand_in


@pytest.fixture
def agent(portal: StandInPortal, tmp_path: Path) -> Iterator[Agent]:
    """The agent loop in a thread, allowed to run the fake runner."""
    node = Agent(portal.url, NODE_TOKEN, tmp_path / "agent", workload_entries={FAKE_RUNNER})
    thread = threading.Thread(target=node.run, name="agent-loop", daemon=True)
    thread.start()
    yield node
    node.stop_requested = True
    thread.join(60)
    assert not thread.is_alive()


def workload(
    portal: StandInPortal, record: Path, wid: int = 7, attempt: int = 1, **spec: Any
) -> dict[str, Any]:
    """A desired workload as the portal sends it, running the fake runner on the CPU."""
    config = portal.file("config.json", b'{"model_type": "llama"}')
    return {
        "id": wid,
        "attempt": attempt,
        "kind": "training",
        "entry": FAKE_RUNNER,
        "token": f"mrun-{wid}.{attempt}.secret-hmac",
        "gpu_indices": [],
        "nproc": 1,
        "model": {
            "version_id": 3,
            "revision": hashlib.sha256(b"tiny model").hexdigest(),
            "files": [config],
        },
        "files": [portal.file("data/train.jsonl", b'{"messages": []}\n')],
        "spec": {"job": "ftjob-abc", "attempt": attempt, "record_dir": str(record), **spec},
    }


def reported(portal: StandInPortal, wid: int, attempt: int, status: str) -> dict | None:
    last = portal.last_workload(wid, attempt)
    return last if last and last["status"] == status else None


def seen(record: Path) -> dict[str, Any]:
    path = poll(lambda: (record / "seen.json").exists() and record / "seen.json", "the runner")
    return json.loads(path.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
    ).stdout.strip()
    return bool(state) and not state.startswith("Z")


def test_runner_gets_its_spec_files_and_token_and_success_is_reported(
    portal, agent, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENMAAS_ENGINE_API_KEY", "the agent's own secret")
    cpu = workload(portal, tmp_path / "cpu", 7, say="hello from the runner")
    gpu = workload(portal, tmp_path / "gpu", 8)
    gpu["gpu_indices"] = [1, 3]
    portal.workloads = [cpu, gpu]

    done = poll(lambda: reported(portal, 7, 1, "succeeded"), "the workload to succeed")

    assert done["exit_code"] == 0 and done["error"] == "" and done["pid"] > 0
    statuses = [r["status"] for r in portal.workload_reports(7, 1)]
    assert statuses.index("running") < statuses.index("succeeded")
    got = seen(tmp_path / "cpu")
    spec = got["spec"]
    assert spec["job"] == "ftjob-abc" and spec["say"] == "hello from the runner"
    assert spec["portal"] == portal.url
    assert spec["files_dir"].endswith("workloads/7-1/files")
    assert spec["output_dir"].endswith("workloads/7-1/output")
    assert got["files"] == {"data/train.jsonl": '{"messages": []}\n'}
    assert Path(spec["model_dir"]).name == cpu["model"]["revision"]
    assert "config.json" in got["model_files"]
    assert got["token"] == "mrun-7.1.secret-hmac"
    assert not any("mrun-" in arg for arg in got["cmdline"])
    assert got["cmdline"][:3] == [sys.executable, "-m", FAKE_RUNNER]
    assert got["cmdline"][3] == "--spec" and got["cmdline"][4].endswith("7-1/spec.json")
    assert got["cuda"] == ""
    assert "OPENMAAS_ENGINE_API_KEY" not in got["env_keys"]
    assert seen(tmp_path / "gpu")["cuda"] == "1,3"
    log = tmp_path / "agent" / "logs" / "workload-7-1.log"
    assert "hello from the runner" in log.read_text()


def test_failed_runner_is_reported_with_its_exit_code_and_log_tail(portal, agent, tmp_path):
    portal.workloads = [workload(portal, tmp_path / "r", say="boom: out of patience", exit_code=3)]

    failed = poll(lambda: reported(portal, 7, 1, "failed"), "the workload to fail")

    assert failed["exit_code"] == 3
    assert "exited with code 3" in failed["error"]
    assert "boom: out of patience" in failed["error"]
    # Final: the agent does not run it again while the portal still lists it.
    beats = len(portal.heartbeats)
    poll(lambda: len(portal.heartbeats) > beats + 3, "more heartbeats")
    assert [r["status"] for r in portal.workload_reports(7, 1)][-1] == "failed"
    assert [r["status"] for r in portal.workload_reports(7, 1)].count("running") == 1


def test_bad_inputs_fail_the_workload_with_the_reason_and_nothing_runs(portal, agent, tmp_path):
    corrupt = workload(portal, tmp_path / "a", 1)
    corrupt["files"] = [portal.file("data/train.jsonl", b"tampered", sha256="0" * 64)]
    escaping = workload(portal, tmp_path / "b", 2)
    escaping["files"] = [portal.file("../../outside.jsonl", b"x")]
    foreign = workload(portal, tmp_path / "c", 3)
    foreign["entry"] = "http.server"
    portal.workloads = [corrupt, escaping, foreign]

    reasons = {
        wid: poll(lambda w=wid: reported(portal, w, 1, "failed"), f"workload {wid} to fail")
        for wid in (1, 2, 3)
    }

    assert "checksum mismatch for data/train.jsonl" in reasons[1]["error"]
    assert "unsafe path" in reasons[2]["error"]
    assert "'http.server' is not allowed" in reasons[3]["error"]
    assert all(r["exit_code"] is None and r["pid"] is None for r in reasons.values())
    assert not any((tmp_path / d).exists() for d in "abc")
    workloads = tmp_path / "agent" / "workloads"
    assert not (workloads / "1-1" / "files" / "data" / "train.jsonl").exists()
    assert not (tmp_path / "outside.jsonl").exists()


def test_workload_dropped_by_the_portal_is_stopped_and_reported_stopped(portal, agent, tmp_path):
    portal.workloads = [workload(portal, tmp_path / "r", wait_stdin=True)]
    pid = poll(lambda: reported(portal, 7, 1, "running"), "the workload to run")["pid"]
    seen(tmp_path / "r")

    portal.workloads = []

    poll(lambda: reported(portal, 7, 1, "stopped"), "the workload to be stopped")
    poll(lambda: not alive(pid), "the runner to exit")
    assert not (tmp_path / "agent" / "workloads" / "7-1").exists()
    assert (tmp_path / "agent" / "logs" / "workload-7-1.log").exists()


def test_new_attempt_replaces_the_old_one(portal, agent, tmp_path):
    portal.workloads = [workload(portal, tmp_path / "first", attempt=1, wait_stdin=True)]
    old = poll(lambda: reported(portal, 7, 1, "running"), "attempt 1 to run")["pid"]

    portal.workloads = [workload(portal, tmp_path / "second", attempt=2, wait_stdin=True)]

    new = poll(lambda: reported(portal, 7, 2, "running"), "attempt 2 to run")["pid"]
    assert new != old and not alive(old)
    assert seen(tmp_path / "second")["token"] == "mrun-7.2.secret-hmac"
    assert [r["id"] for r in portal.heartbeats[-1]["workloads"]] == [7]


def test_agent_shutdown_stops_its_workloads(portal, tmp_path):
    node = Agent(portal.url, NODE_TOKEN, tmp_path / "agent", workload_entries={FAKE_RUNNER})
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    portal.workloads = [workload(portal, tmp_path / "r", wait_stdin=True)]
    pid = poll(lambda: reported(portal, 7, 1, "running"), "the workload to run")["pid"]

    node.stop_requested = True
    thread.join(60)

    assert not alive(pid)


AGENT_SCRIPT = """
import sys
from pathlib import Path
from compute.agent.core import Agent
sys.exit(Agent(sys.argv[1], sys.argv[2], Path(sys.argv[3]), workload_entries=[sys.argv[4]]).run())
"""


def test_runner_exits_when_its_agent_is_killed(portal, tmp_path):
    log = tmp_path / "agent.log"
    argv = [sys.executable, "-c", AGENT_SCRIPT, portal.url, NODE_TOKEN, str(tmp_path / "agent")]
    node = spawn([*argv, FAKE_RUNNER], log=log)
    try:
        # SIGTERM is ignored, so only stdin's EOF can end the runner.
        portal.workloads = [workload(portal, tmp_path / "r", wait_stdin=True, ignore_sigterm=True)]
        pid = poll(lambda: reported(portal, 7, 1, "running"), "the workload to run")["pid"]
        seen(tmp_path / "r")
        assert alive(pid)

        node.send_signal(signal.SIGKILL)
        node.wait(10)

        poll(lambda: (tmp_path / "r" / "stdin-closed").exists(), "the runner to see EOF")
        poll(lambda: not alive(pid), "the runner to exit")
    finally:
        stop(node, grace_s=5)


def test_node_offers_trainer_when_the_runner_dependencies_are_installed(portal, agent):
    poll(lambda: portal.heartbeats, "a heartbeat")
    assert "trainer" in portal.registrations[0]["engines"]
    # Found without importing them into the agent.
    script = (
        "import sys; from compute.agent.inventory import detect_engines; "
        "print('trainer' in detect_engines([]), 'torch' in sys.modules, 'peft' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_multi_process_workload_runs_under_torchrun_with_its_gpus():
    desired = {"entry": "training.runner", "nproc": 2, "token": TOKEN, "gpu_indices": [2, 3]}
    base = {"PATH": "/usr/bin", "OPENMAAS_NODE_TOKEN": "node", "VLLM_API_KEY": "k"}

    launch = workload_launch(desired, Path("/w/7-1/spec.json"), base, python="/py")

    assert launch.argv == [
        "/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "training.runner", "--spec", "/w/7-1/spec.json",
    ]  # fmt: skip
    assert launch.env == {
        "PATH": "/usr/bin",
        "OPENMAAS_RUN_TOKEN": TOKEN,
        "CUDA_VISIBLE_DEVICES": "2,3",
    }
