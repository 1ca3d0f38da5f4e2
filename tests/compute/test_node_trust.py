"""The node trust boundary: a node (a third party) cannot aim the gateway, which carries
replica secrets, at loopback, metadata, the platform's own services or anything outside
the networks the operator listed; the IP checked at registration is the one dialled."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from compute.models import Node, Replica, ReplicaStatus
from compute.services.nodes import create_node
from tests.compute.test_nodes_api import INVENTORY, agent_client
from tests.factories import deployment


@pytest.fixture
def dns(monkeypatch):
    """Names this test controls (the resolver answers them); others resolve as usual."""
    names: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in names:
            family = socket.AF_INET6 if ":" in names[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (names[host], 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.fixture
def token(admin, settings):
    settings.COMPUTE_NODE_NETWORKS = ["10.0.0.0/8"]
    settings.COMPUTE_ALLOW_LOOPBACK_NODES = False
    _, raw = create_node(admin.user, "third-party")
    return raw


def register(token: str, address: str):
    return agent_client(token).post(
        "/api/compute/agent/register", dict(INVENTORY, address=address), format="json"
    )


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.1", "2130706433", "0x7f.1", "0177.0.0.1", "localhost", "::1",
     "::ffff:127.0.0.1", "[::1]"],
)  # fmt: skip
def test_loopback_in_any_spelling_is_refused(token, address):
    response = register(token, address)
    assert response.status_code == 400, response.content
    assert response.json()["param"] == "address"


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "100.100.100.200", "168.63.129.16", "fd00:ec2::254",
     "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2852039166", "0xa9fea9fe"],
)  # fmt: skip
def test_metadata_addresses_are_refused_even_inside_allowed_networks(token, settings, address):
    settings.COMPUTE_NODE_NETWORKS = ["public", "10.0.0.0/8", "100.64.0.0/10", "fd00::/8"]
    response = register(token, address)
    assert response.status_code == 400, response.content
    assert "metadata" in response.json()["detail"] or "link-local" in response.json()["detail"]


def test_metadata_host_name_is_refused(token, dns):
    dns["metadata.google.internal"] = "169.254.169.254"
    response = register(token, "metadata.google.internal")
    assert response.status_code == 400
    assert "metadata" in response.json()["detail"]


@pytest.mark.parametrize("address", ["192.168.1.5", "172.16.0.9", "8.8.8.8", "100.64.0.1"])
def test_addresses_outside_the_listed_networks_are_refused(token, address):
    response = register(token, address)
    assert response.status_code == 400
    assert "COMPUTE_NODE_NETWORKS" in response.json()["detail"]


def test_public_means_globally_routable_only(token, settings):
    settings.COMPUTE_NODE_NETWORKS = ["public"]
    assert register(token, "8.8.8.8").status_code == 200
    assert register(token, "192.168.1.5").status_code == 400  # private ranges: list them


def test_internal_service_hosts_are_refused(token, settings, dns):
    dns["redis"] = "10.0.0.9"
    dns["minio"] = "10.0.0.10"
    settings.REDIS_URL = "redis://redis:6379/0"
    settings.S3_ENDPOINT = "http://minio:9000"
    for address in ("redis", "10.0.0.9", "minio", "10.0.0.10"):
        response = register(token, address)
        assert response.status_code == 400, address
        assert "platform's own services" in response.json()["detail"]


def test_a_name_resolving_to_a_refused_address_among_others_is_refused(token, monkeypatch):
    real = socket.getaddrinfo

    def two_answers(host, *args, **kwargs):
        if host == "split.example":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0)),
            ]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    assert register(token, "split.example").status_code == 400


def test_unresolvable_names_are_refused(token):
    response = register(token, "no-such-host.invalid")
    assert response.status_code == 400
    assert "does not resolve" in response.json()["detail"]


def test_the_gateway_dials_the_ip_resolved_at_registration(token, dns, owner):
    dns["gpu-07.pool.example"] = "10.0.0.5"
    assert register(token, "gpu-07.pool.example").status_code == 200
    node = Node.objects.get(name="third-party")
    assert (node.address, node.resolved_ip) == ("gpu-07.pool.example", "10.0.0.5")
    dns["gpu-07.pool.example"] = "169.254.169.254"  # rebinding after the check
    dep = deployment(owner.user, "rebind")
    replica = Replica.objects.create(deployment=dep, node=node, status=ReplicaStatus.STARTING)
    agent_client(token).post(
        "/api/compute/agent/heartbeat",
        {"replicas": [{"id": replica.pk, "status": "ready", "port": 8101}]},
        format="json",
    )
    replica.refresh_from_db()
    assert replica.url == "http://10.0.0.5:8101"


def test_admin_pin_is_checked_and_resolved(admin, token):
    node = Node.objects.get(name="third-party")
    url = f"/api/compute/nodes/{node.pk}/"
    refused = admin.client().patch(url, {"pinned_address": "169.254.169.254"}, format="json")
    assert refused.status_code == 400
    created = admin.client().post(
        "/api/compute/nodes/", {"name": "p", "pinned_address": "2130706433"}, format="json"
    )
    assert created.status_code == 400
    pinned = admin.client().patch(url, {"pinned_address": "10.2.3.4"}, format="json")
    assert pinned.status_code == 200 and pinned.json()["resolved_ip"] == "10.2.3.4"
    # The pin wins: the agent's report (here a loopback default) is not dialled.
    assert register(token, "127.0.0.1").status_code == 200
    assert Node.objects.get(pk=node.pk).resolved_ip == "10.2.3.4"


def test_loopback_node_cannot_claim_a_platform_service_port(admin, settings, owner):
    settings.COMPUTE_ALLOW_LOOPBACK_NODES = True
    _, raw = create_node(admin.user, "local")
    assert register(raw, "127.0.0.1").status_code == 200
    node = Node.objects.get(name="local")
    replica = Replica.objects.create(
        deployment=deployment(owner.user, "ports"), node=node, status=ReplicaStatus.STARTING
    )
    redis_port = urlsplit(settings.REDIS_URL).port
    response = agent_client(raw).post(
        "/api/compute/agent/heartbeat",
        {"replicas": [{"id": replica.pk, "status": "ready", "port": redis_port}]},
        format="json",
    )
    assert response.status_code == 400 and response.json()["param"] == "port"
    replica.refresh_from_db()
    assert replica.url == ""


def test_agent_refused_at_registration_exits_with_the_portals_reason(
    live_portal, admin, settings, tmp_path, caplog
):
    from compute.agent.core import Agent

    settings.COMPUTE_ALLOW_LOOPBACK_NODES = False
    _, raw = create_node(admin.user, "refused")
    agent = Agent(live_portal, raw, tmp_path, address="127.1")
    with caplog.at_level("ERROR", logger="compute.agent"):
        assert agent.run() == 1
    assert "Loopback node addresses are not allowed" in caplog.text
