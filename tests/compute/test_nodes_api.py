"""Nodes join with a token; what they report is checked before the gateway trusts it."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from compute.models import Node, Replica, ReplicaStatus
from compute.services.nodes import create_node
from tests.factories import deployment

INVENTORY = {
    "hostname": "gpu-01",
    "address": "10.0.0.7",
    "cpu_count": 8,
    "memory_bytes": 1 << 34,
    "gpus": [],
    "engines": ["transformers"],
}


def agent_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture(autouse=True)
def node_networks(settings):
    settings.COMPUTE_NODE_NETWORKS = ["10.0.0.0/8"]


@pytest.fixture
def node_token(admin):
    _, token = create_node(admin.user, "gpu-01")
    return token


def test_only_admins_issue_node_tokens(owner, admin):
    assert owner.client().post("/api/compute/nodes/", {"name": "x"}).status_code == 403
    created = admin.client().post("/api/compute/nodes/", {"name": "n2"}, format="json")
    assert created.status_code == 201 and created.json()["token"].startswith("mnode-")
    assert Node.objects.get(name="n2").token_hash != created.json()["token"]


def test_register_records_inventory(node_token):
    response = agent_client(node_token).post(
        "/api/compute/agent/register", INVENTORY, format="json"
    )
    assert response.status_code == 200
    node = Node.objects.get(name="gpu-01")
    assert (node.status, node.address, node.cpu_count) == ("ready", "10.0.0.7", 8)


def test_bad_or_disabled_node_token_is_401(node_token, admin):
    assert (
        agent_client("mnode-wrong")
        .post("/api/compute/agent/register", INVENTORY, format="json")
        .status_code
        == 401
    )
    assert (
        agent_client(admin.key).post("/api/compute/agent/heartbeat", {}, format="json").status_code
        == 401
    )
    node = Node.objects.get(name="gpu-01")
    admin.client().delete(f"/api/compute/nodes/{node.pk}/")
    assert (
        agent_client(node_token)
        .post("/api/compute/agent/register", INVENTORY, format="json")
        .status_code
        == 401
    )


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "0.0.0.0",  # noqa: S104 - an address a node must not report
        "224.0.0.1",
        "fe80::1",
        "not a host!",
        "a/b",
    ],
)
def test_node_cannot_report_a_dangerous_address(node_token, address):
    response = agent_client(node_token).post(
        "/api/compute/agent/register", dict(INVENTORY, address=address), format="json"
    )
    assert response.status_code == 400
    assert response.json()["param"] == "address"


def test_loopback_addresses_refused_when_not_allowed(node_token, settings):
    settings.COMPUTE_ALLOW_LOOPBACK_NODES = False
    response = agent_client(node_token).post(
        "/api/compute/agent/register", dict(INVENTORY, address="127.0.0.1"), format="json"
    )
    assert response.status_code == 400


def test_pinned_address_wins_over_reported_one(admin, owner):
    created = (
        admin.client()
        .post(
            "/api/compute/nodes/", {"name": "pinned", "pinned_address": "10.1.2.3"}, format="json"
        )
        .json()
    )
    client = agent_client(created["token"])
    client.post("/api/compute/agent/register", dict(INVENTORY, address="10.9.9.9"), format="json")
    node = Node.objects.get(name="pinned")
    dep = deployment(owner.user, "m")
    replica = Replica.objects.create(deployment=dep, node=node, status=ReplicaStatus.STARTING)
    client.post(
        "/api/compute/agent/heartbeat",
        {"replicas": [{"id": replica.pk, "status": "ready", "port": 8101}]},
        format="json",
    )
    replica.refresh_from_db()
    assert replica.url == "http://10.1.2.3:8101"


def test_heartbeat_cannot_touch_another_nodes_replica(node_token, admin, owner):
    other, _ = create_node(admin.user, "other")
    dep = deployment(owner.user, "m2")
    replica = Replica.objects.create(deployment=dep, node=other, status=ReplicaStatus.STARTING)
    response = agent_client(node_token).post(
        "/api/compute/agent/heartbeat",
        {"replicas": [{"id": replica.pk, "status": "ready", "port": 9}]},
        format="json",
    )
    assert response.status_code == 200
    replica.refresh_from_db()
    assert replica.status == ReplicaStatus.STARTING and replica.url == ""


def test_malformed_heartbeat_is_400(node_token):
    client = agent_client(node_token)
    assert (
        client.post("/api/compute/agent/heartbeat", {"replicas": "x"}, format="json").status_code
        == 400
    )
    assert (
        client.post(
            "/api/compute/agent/heartbeat",
            {"replicas": [{"id": 1, "status": "exploded"}]},
            format="json",
        ).status_code
        == 400
    )
    response = client.generic(
        "POST", "/api/compute/agent/heartbeat", "{oops", content_type="application/json"
    )
    assert response.status_code == 400


def test_agent_restart_takes_its_replicas_out_of_routing(node_token, owner):
    client = agent_client(node_token)
    client.post("/api/compute/agent/register", INVENTORY, format="json")
    dep = deployment(owner.user, "m3")
    replica = Replica.objects.create(
        deployment=dep,
        node=Node.objects.get(name="gpu-01"),
        status=ReplicaStatus.READY,
        url="http://10.0.0.7:8000",
    )
    client.post("/api/compute/agent/register", INVENTORY, format="json")
    replica.refresh_from_db()
    assert (replica.status, replica.url) == (ReplicaStatus.ASSIGNED, "")
    assert replica.events.filter(reason="agent restarted").exists()
