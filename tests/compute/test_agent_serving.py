"""The spine: a real node agent starts a real engine replica of a registered model and
the gateway routes the official openai SDK to it.

The tests share one portal, agent and replica (``module_db``), in file order: the last
two kill the replica (the agent restarts it) and then scale the deployment to zero."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from compute.agent.procs import spawn, stop, wait_for
from compute.models import Deployment, Node, NodeStatus, Replica, ReplicaStatus
from compute.services.deployments import deploy_model, scale_deployment
from compute.services.nodes import create_node
from portal.services.registry import import_model_dir

MODEL = "acme/tiny-chat"


def poll(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    return wait_for(check, timeout_s=timeout_s, what=what, interval_s=0.1, ignore=())


def ready_replica(deployment: Deployment) -> Replica | None:
    return deployment.replica_set.filter(status=ReplicaStatus.READY).first()


@pytest.fixture(scope="module")
def pool(
    module_live_portal: str,
    tiny_model_dir: Path,
    module_admin: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """A node agent process joined to the live portal, serving one deployment."""
    tmp_path = tmp_path_factory.mktemp("pool")
    version = import_model_dir(tiny_model_dir, MODEL, actor=None, visibility="public")
    deployment = deploy_model(module_admin.user, version.repo, replicas=1)
    _, token = create_node(module_admin.user, "test-node")
    env = {**os.environ, "OPENMAAS_NODE_TOKEN": token}
    log = tmp_path / "agent.log"
    agent = spawn(
        [
            sys.executable,
            "-m",
            "compute.agent",
            "--portal",
            module_live_portal,
            "--work-dir",
            str(tmp_path / "agent"),
        ],
        log=log,
        env=env,
    )
    try:
        poll(lambda: ready_replica(deployment), 120, "a ready replica")
        yield {"url": module_live_portal, "deployment": deployment, "agent": agent, "log": log}
    finally:
        stop(agent, grace_s=20)


def sdk(pool: dict[str, Any], key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=pool["url"] + "/v1", api_key=key, max_retries=0)


def test_node_registers_its_inventory(pool):
    node = Node.objects.get(name="test-node")
    assert node.status == NodeStatus.READY
    assert node.cpu_count == os.cpu_count()
    assert node.memory_bytes > 0 and "transformers" in node.engines


def test_openai_sdk_lists_and_chats_through_gateway_and_replica(pool, module_owner):
    client = sdk(pool, module_owner.key)
    assert MODEL in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "你好"}], max_tokens=8, temperature=0
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens == 8
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 6
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2


def test_replica_answers_only_with_its_secret(pool):
    replica = ready_replica(pool["deployment"])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    url = f"{replica.url}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-the-secret"}
    assert httpx.post(url, json=body, headers=wrong, timeout=30).status_code == 401
    right = {"Authorization": f"Bearer {replica.secret}"}
    assert httpx.post(url, json=body, headers=right, timeout=30).status_code == 200
    assert httpx.get(f"{replica.url}/health", timeout=5).status_code == 200


def test_completions_with_logprobs_pass_through(pool, module_owner):
    reply = sdk(pool, module_owner.key).completions.create(
        model=MODEL, prompt="今天天气很好", max_tokens=0, echo=True, logprobs=1
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs.token_logprobs[0] is None
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:])


def test_killed_replica_gives_503_quickly_then_agent_restarts_it(pool, module_owner):
    deployment = pool["deployment"]
    replica = ready_replica(deployment)
    os.kill(replica.pid, signal.SIGKILL)
    response = httpx.post(
        f"{pool['url']}/v1/chat/completions",
        headers={"Authorization": f"Bearer {module_owner.key}"},
        timeout=30,
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "no_replica_ready"
    restarted = poll(
        lambda: (
            Replica.objects.filter(pk=replica.pk, status="ready", restarts__gte=1)
            .exclude(pid=replica.pid)
            .first()
        ),
        120,
        "the agent to restart the replica",
    )
    assert restarted.events.filter(new_status=ReplicaStatus.FAILED).exists()
    reply = poll(lambda: _chat_ok(pool, module_owner.key), 30, "the gateway to route again")
    assert reply.choices[0].message.content is not None


def _chat_ok(pool: dict[str, Any], key: str) -> Any:
    try:
        return sdk(pool, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    except openai.APIStatusError:
        return None


def test_scaling_to_zero_stops_the_engine_process(pool, module_admin):
    deployment = pool["deployment"]
    pid = ready_replica(deployment).pid
    scale_deployment(module_admin.user, deployment, 0)
    poll(
        lambda: not deployment.replica_set.exclude(status=ReplicaStatus.STOPPED).exists(),
        60,
        "the replica to stop",
    )
    poll(lambda: not _alive(pid), 30, "the engine process to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); ask ps for its state.
    state = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
    ).stdout.strip()
    return bool(state) and not state.startswith("Z")
