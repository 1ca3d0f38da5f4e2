"""Each node agent serves /metrics with its own token: replica states and restarts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from compute.agent.__main__ import main
from compute.agent.core import Agent
from compute.agent.metrics import AgentCollector, serve_metrics
from compute.agent.replica import Listen, LocalReplica

TOKEN = "agent-metrics-token"


@pytest.fixture
def agent(tmp_path):
    agent = Agent("http://127.0.0.1:9", "node-token", tmp_path)
    pool = ThreadPoolExecutor(max_workers=1)
    for rid, status, restarts in ((7, "ready", 0), (8, "failed", 3)):
        replica = LocalReplica(
            {"id": rid, "served_name": "olivia/tiny"}, agent.cache, pool, tmp_path, Listen()
        )
        replica.status, replica.restarts = status, restarts
        agent.local[rid] = replica
    yield agent
    agent.local.clear()
    agent.shutdown()
    pool.shutdown()


def test_agent_metrics_answer_with_their_token_only(agent):
    server = serve_metrics(AgentCollector(agent), "127.0.0.1", 0, TOKEN)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        answer = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert httpx.get(url.replace("/metrics", "/other")).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 200
    text = answer.text
    assert 'openmaas_agent_replicas{state="ready"} 1.0' in text
    assert 'openmaas_agent_replicas{state="failed"} 1.0' in text
    assert 'openmaas_agent_replica_restarts_total{model="olivia/tiny",replica="8"} 3.0' in text


def test_agent_refuses_a_metrics_port_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv("OPENMAAS_METRICS_TOKEN", raising=False)
    argv = ["--portal", "http://127.0.0.1:9", "--token", "t", "--metrics-port", "9100"]
    assert main(argv) == 2
    assert "--metrics-token" in capsys.readouterr().err
