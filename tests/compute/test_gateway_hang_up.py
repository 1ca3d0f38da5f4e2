"""The gateway in front of the real CPU engine: a client that hangs up on a non-streamed
request makes the gateway close its upstream connection, and the engine stops generating;
chat logprobs (a boolean) reach the engine and come back."""

from __future__ import annotations

import httpx
import pytest

from compute.models import Deployment, Node, Replica, ReplicaStatus
from tests.compute.conftest import ENGINE_API_KEY, SERVED_NAME
from tests.compute.hang_up import LONG, abandon_and_measure
from tests.factories import model_repo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def routed(owner, engine_url: str) -> str:
    """A ready replica of a public deployment served by the test engine."""
    repo = model_repo(owner.user, "tiny", "public")
    dep = Deployment.objects.create(model_version=repo.versions.get(), served_name=SERVED_NAME)
    node = Node.objects.create(name="n1", token_hash="f" * 64, status="ready")
    Replica.objects.create(
        deployment=dep,
        node=node,
        status=ReplicaStatus.READY,
        url=engine_url,
        secret=ENGINE_API_KEY,
    )
    return engine_url


def test_hanging_up_on_the_gateway_stops_generation_on_the_engine(
    live_portal, routed, owner, engine_client
):
    body = {**LONG, "_authorization": f"Bearer {owner.key}"}
    measured = abandon_and_measure(engine_client, live_portal, "/v1/chat/completions", body)
    assert measured["finished"] == 1
    assert measured["generated"] < LONG["max_tokens"]


def test_chat_logprobs_through_the_gateway(live_portal, routed, owner):
    response = httpx.post(
        f"{live_portal}/v1/chat/completions",
        headers={"Authorization": f"Bearer {owner.key}"},
        json={
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "logprobs": True,
            "top_logprobs": 2,
            "stream": None,
            "stream_options": None,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    assert all(len(item["top_logprobs"]) == 2 for item in content)
