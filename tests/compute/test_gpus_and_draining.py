"""GPU reservation and moving replicas off drained or disabled nodes, with nodes that join
through the agent API reporting simulated inventories (fake GPUs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compute.agent.replica import engine_launch
from compute.models import NodeStatus, Replica, ReplicaStatus
from compute.routing import _query_routes
from compute.services.deployments import deploy_model
from compute.services.nodes import create_node
from compute.tasks import reconcile_pool
from tests.compute.test_nodes_api import INVENTORY, agent_client
from tests.factories import model_repo

AGENT_ENV = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3", "OPENMAAS_NODE_TOKEN": "t"}


class FakeNode:
    """A node as the portal sees it: registered by 'its agent' over the agent API."""

    def __init__(self, admin: Any, name: str, address: str, gpus: int = 0) -> None:
        _, token = create_node(admin.user, name)
        self.client = agent_client(token)
        engines = ["transformers", "vllm"] if gpus else ["transformers"]
        inventory = dict(
            INVENTORY,
            hostname=name,
            address=address,
            engines=engines,
            gpus=[{"index": i, "name": "Fake H100", "memory_bytes": 80 << 30} for i in range(gpus)],
        )
        response = self.client.post("/api/compute/agent/register", inventory, format="json")
        assert response.status_code == 200, response.content
        self.reports: dict[int, dict[str, Any]] = {}

    def desired(self) -> list[dict[str, Any]]:
        response = self.client.post(
            "/api/compute/agent/heartbeat",
            {"replicas": list(self.reports.values())},
            format="json",
        )
        assert response.status_code == 200, response.content
        return response.json()["replicas"]

    def run_all(self) -> list[dict[str, Any]]:
        """Start everything wanted, report it ready, return the desired state."""
        wanted = self.desired()
        self.reports = {
            d["id"]: {"id": d["id"], "status": "ready", "port": 20000 + d["id"]} for d in wanted
        }
        self.desired()
        return wanted


@pytest.fixture(autouse=True)
def node_networks(settings):
    settings.COMPUTE_NODE_NETWORKS = ["10.0.0.0/8"]


@pytest.fixture
def repo(owner):
    return model_repo(owner.user, "gpu-model")


def launch(desired: dict[str, Any]):
    return engine_launch(desired, Path("/cache/m"), "10.0.0.1", 21000, AGENT_ENV)


def test_gpu_replicas_never_share_a_gpu_and_each_sees_only_its_own(admin, owner, repo):
    node = FakeNode(admin, "gpu-box", "10.0.0.21", gpus=4)
    dep = deploy_model(owner.user, repo, replicas=5)  # engine=auto on a GPU node: vLLM
    placed = list(dep.replica_set.filter(status=ReplicaStatus.ASSIGNED))
    assert len(placed) == 4  # one whole GPU each; the fifth waits for a free GPU
    assert dep.replica_set.filter(status=ReplicaStatus.PENDING).count() == 1
    assert sorted(i for r in placed for i in r.gpu_indices) == [0, 1, 2, 3]
    assert {r.engine for r in placed} == {"vllm"}

    seen = []
    for desired in node.desired():
        started = launch(desired)
        assert started.env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, desired["gpu_indices"]))
        assert started.argv[started.argv.index("--tensor-parallel-size") + 1] == "1"
        assert started.env["VLLM_API_KEY"] == desired["secret"]
        assert "OPENMAAS_NODE_TOKEN" not in started.env  # never handed to an engine
        seen.append(started.env["CUDA_VISIBLE_DEVICES"])
    assert sorted(seen) == ["0", "1", "2", "3"]


def test_gpus_per_replica_reserves_that_many_whole_gpus(admin, owner, repo):
    node = FakeNode(admin, "gpu-box", "10.0.0.22", gpus=4)
    dep = deploy_model(owner.user, repo, replicas=3, engine="vllm", gpus_per_replica=2)
    placed = list(dep.replica_set.filter(status=ReplicaStatus.ASSIGNED))
    assert [len(r.gpu_indices) for r in placed] == [2, 2]
    assert not set(placed[0].gpu_indices) & set(placed[1].gpu_indices)
    for desired in node.desired():
        started = launch(desired)
        assert started.argv[started.argv.index("--tensor-parallel-size") + 1] == "2"
        assert len(started.env["CUDA_VISIBLE_DEVICES"].split(",")) == 2


def test_cpu_replica_on_a_gpu_node_sees_no_gpu(admin, owner, repo):
    node = FakeNode(admin, "gpu-box", "10.0.0.23", gpus=2)
    dep = deploy_model(owner.user, repo, replicas=1, engine="transformers")
    assert dep.replica_set.get().gpu_indices == []
    (desired,) = node.desired()
    started = launch(desired)
    assert started.env["CUDA_VISIBLE_DEVICES"] == ""
    assert started.env["OPENMAAS_ENGINE_API_KEY"] == desired["secret"]


def test_agent_never_starts_an_engine_without_a_secret(admin, owner, repo):
    node = FakeNode(admin, "cpu-box", "10.0.0.24")
    deploy_model(owner.user, repo, replicas=1, engine="transformers")
    (desired,) = node.desired()
    with pytest.raises(ValueError, match="never starts without"):
        launch(dict(desired, secret=""))


def two_nodes_with_replicas_on_the_first(admin, owner, repo):
    first = FakeNode(admin, "first", "10.0.0.31")
    dep = deploy_model(owner.user, repo, replicas=2)
    second = FakeNode(admin, "second", "10.0.0.32")
    first.run_all()
    assert dep.replica_set.filter(status=ReplicaStatus.READY, node__name="first").count() == 2
    return first, second, dep


def routed(dep) -> list[str]:
    route = _query_routes().get(dep.served_name)  # load_routes manages its own connection
    return sorted(route.replicas) if route else []


def test_disabled_nodes_replicas_come_up_on_another_node(admin, owner, repo):
    first, second, dep = two_nodes_with_replicas_on_the_first(admin, owner, repo)
    response = admin.client().patch(
        f"/api/compute/nodes/{first_node_id(dep)}/", {"status": "disabled"}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == NodeStatus.DISABLED
    old = dep.replica_set.filter(node__name="first")
    assert set(old.values_list("status", flat=True)) == {ReplicaStatus.STOPPED}
    moved = dep.replica_set.filter(node__name="second")
    assert set(moved.values_list("status", flat=True)) == {ReplicaStatus.ASSIGNED}
    second.run_all()
    assert set(moved.values_list("status", flat=True)) == {ReplicaStatus.READY}
    assert routed(dep) == sorted(
        f"http://10.0.0.32:{20000 + pk}" for pk in moved.values_list("pk", flat=True)
    )
    assert first.client.post("/api/compute/agent/heartbeat", {}, format="json").status_code == 401
    reconcile_pool()
    assert dep.replica_set.filter(status__in=ReplicaStatus.LIVE).count() == 2


def first_node_id(dep) -> int:
    return dep.replica_set.filter(node__name="first").values_list("node_id", flat=True)[0]


def test_draining_keeps_replicas_serving_until_their_replacements_are_ready(admin, owner, repo):
    first, second, dep = two_nodes_with_replicas_on_the_first(admin, owner, repo)
    admin.client().patch(
        f"/api/compute/nodes/{first_node_id(dep)}/", {"status": "draining"}, format="json"
    )
    old = dep.replica_set.filter(node__name="first")
    assert set(old.values_list("status", flat=True)) == {ReplicaStatus.READY}
    assert dep.replica_set.filter(node__name="second", status="assigned").count() == 2
    wanted = second.desired()
    second.reports = {
        wanted[0]["id"]: {"id": wanted[0]["id"], "status": "ready", "port": 20500}
    }  # one replacement ready
    second.desired()
    reconcile_pool()
    assert sorted(old.values_list("status", flat=True)) == ["ready", "stopping"]
    second.run_all()
    reconcile_pool()
    assert set(old.values_list("status", flat=True)) == {ReplicaStatus.STOPPING}
    assert first.desired() == []  # its agent is told to stop them, and does
    first.reports = {}
    first.desired()
    assert set(old.values_list("status", flat=True)) == {ReplicaStatus.STOPPED}


def test_draining_the_only_node_keeps_its_replicas(admin, owner, repo):
    only = FakeNode(admin, "only", "10.0.0.41")
    dep = deploy_model(owner.user, repo, replicas=1)
    only.run_all()
    node_id = dep.replica_set.get().node_id
    admin.client().patch(f"/api/compute/nodes/{node_id}/", {"status": "draining"}, format="json")
    reconcile_pool()
    assert dep.replica_set.filter(node_id=node_id, status=ReplicaStatus.READY).count() == 1
    assert dep.replica_set.filter(status=ReplicaStatus.PENDING).count() == 1  # its replacement
    assert len(only.desired()) == 1


def test_only_admins_drain_or_disable(owner, admin):
    node, _ = create_node(admin.user, "n")
    url = f"/api/compute/nodes/{node.pk}/"
    assert owner.client().patch(url, {"status": "disabled"}, format="json").status_code == 403
    bad = admin.client().patch(url, {"status": "offline"}, format="json")
    assert bad.status_code == 400
    assert Replica.objects.count() == 0
