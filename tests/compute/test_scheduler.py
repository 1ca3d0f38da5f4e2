"""Placement and liveness: the database is the truth, reconciling passes converge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from compute.models import Deployment, DeploymentStatus, Node, NodeStatus, ReplicaStatus
from compute.services.deployments import deploy_model, scale_deployment, stop_deployment
from compute.tasks import reconcile_pool
from tests.factories import model_repo


def ready_node(name: str, **fields) -> Node:
    fields.setdefault("engines", ["transformers"])
    return Node.objects.create(
        name=name,
        token_hash=name.ljust(64, "0"),
        status="ready",
        last_heartbeat_at=timezone.now(),
        **fields,
    )


@pytest.fixture
def repo(owner):
    return model_repo(owner.user, "sched")


def test_replicas_spread_over_ready_nodes_least_loaded_first(repo, owner):
    a, b = ready_node("a"), ready_node("b")
    dep = deploy_model(owner.user, repo, replicas=4)
    placed = list(dep.replica_set.values_list("node__name", flat=True))
    assert sorted(placed) == ["a", "a", "b", "b"]
    assert all(r.status == ReplicaStatus.ASSIGNED for r in dep.replica_set.all())
    assert {a.pk, b.pk} == set(dep.replica_set.values_list("node_id", flat=True))


def test_replicas_wait_when_no_node_has_room(repo, owner):
    ready_node("small", max_replicas=1)
    dep = deploy_model(owner.user, repo, replicas=2)
    statuses = sorted(dep.replica_set.values_list("status", flat=True))
    assert statuses == [ReplicaStatus.ASSIGNED, ReplicaStatus.PENDING]
    ready_node("more")
    reconcile_pool()
    assert not dep.replica_set.filter(status=ReplicaStatus.PENDING).exists()


def test_vllm_replicas_need_free_gpus(repo, owner):
    ready_node("cpu-only")
    gpu = ready_node("gpu", gpus=[{"index": 0}, {"index": 1}], engines=["transformers", "vllm"])
    dep = deploy_model(owner.user, repo, replicas=3, engine="vllm")
    placed = dep.replica_set.exclude(status=ReplicaStatus.PENDING)
    assert [r.node_id for r in placed] == [gpu.pk, gpu.pk]
    assert sorted(i for r in placed for i in r.gpu_indices) == [0, 1]
    assert dep.replica_set.filter(status=ReplicaStatus.PENDING).count() == 1


def test_silent_node_goes_offline_and_its_replicas_move(repo, owner, settings):
    first = ready_node("first")
    dep = deploy_model(owner.user, repo, replicas=1)
    replica = dep.replica_set.get()
    assert replica.node_id == first.pk
    second = ready_node("second")
    Node.objects.filter(pk=first.pk).update(
        last_heartbeat_at=timezone.now() - timedelta(seconds=settings.NODE_OFFLINE_AFTER_S + 5)
    )
    result = reconcile_pool()
    assert result["offline"] == 1
    replica.refresh_from_db()
    assert Node.objects.get(pk=first.pk).status == NodeStatus.OFFLINE
    assert (replica.node_id, replica.status) == (second.pk, ReplicaStatus.ASSIGNED)
    reasons = list(replica.events.values_list("reason", flat=True))
    assert any("went offline" in r for r in reasons)


def test_reconciling_twice_changes_nothing(repo, owner):
    ready_node("n")
    dep = deploy_model(owner.user, repo, replicas=2)
    before = list(dep.replica_set.values_list("pk", "node_id", "status"))
    reconcile_pool()
    reconcile_pool()
    assert list(dep.replica_set.values_list("pk", "node_id", "status")) == before


def test_scale_down_and_stop(repo, owner):
    ready_node("n")
    dep = deploy_model(owner.user, repo, replicas=3)
    scale_deployment(owner.user, dep, 1)
    assert dep.replica_set.filter(status__in=ReplicaStatus.ON_NODE).count() == 1
    assert dep.replica_set.filter(status=ReplicaStatus.STOPPING).count() == 2
    stop_deployment(owner.user, dep)
    assert not dep.replica_set.filter(status__in=ReplicaStatus.ON_NODE).exists()


def test_redeploying_replaces_the_active_deployment(repo, owner):
    ready_node("n")
    old = deploy_model(owner.user, repo, replicas=1)
    new = deploy_model(owner.user, repo, replicas=1)
    old.refresh_from_db()
    assert old.status == DeploymentStatus.STOPPED and new.status == DeploymentStatus.ACTIVE
    assert Deployment.objects.filter(served_name=repo.full_name, status="active").count() == 1
    assert not old.replica_set.filter(status__in=ReplicaStatus.ON_NODE).exists()


def test_deployments_api_is_scoped_to_readers(repo, owner, outsider):
    repo.visibility = "private"
    repo.save()
    ready_node("n")
    response = owner.client().post(
        "/api/compute/deployments/", {"model": "olivia/sched", "replicas": 1}, format="json"
    )
    assert response.status_code == 201
    dep_id = response.json()["id"]
    assert outsider.client().get(f"/api/compute/deployments/{dep_id}/").status_code == 404
    assert (
        outsider.client()
        .post("/api/compute/deployments/", {"model": "olivia/sched"}, format="json")
        .status_code
        == 404
    )
    assert (
        outsider.client()
        .patch(f"/api/compute/deployments/{dep_id}/", {"replicas": 3}, format="json")
        .status_code
        == 404
    )
    bad = owner.client().post(
        "/api/compute/deployments/", {"model": "olivia/sched", "replicas": "many"}, format="json"
    )
    assert bad.status_code == 400


def test_reconcile_selects_only_deployments_that_need_work(repo, owner):
    from compute.models import Replica
    from compute.services.scheduler import deployments_needing_work

    node = ready_node("n", max_replicas=50)
    settled = deploy_model(owner.user, repo, replicas=1)
    old_repo = model_repo(owner.user, "old")
    for _ in range(3):  # stopped long ago: every replica stopped
        stop_deployment(owner.user, deploy_model(owner.user, old_repo, replicas=1))
    Replica.objects.filter(status=ReplicaStatus.STOPPING).update(status=ReplicaStatus.STOPPED)
    short = deploy_model(owner.user, model_repo(owner.user, "short"), replicas=2)
    Replica.objects.filter(deployment=short).delete()
    stopped_live = deploy_model(owner.user, model_repo(owner.user, "stopped-live"), replicas=1)
    Deployment.objects.filter(pk=stopped_live.pk).update(status=DeploymentStatus.STOPPED)
    drained = deploy_model(owner.user, model_repo(owner.user, "drained"), replicas=1)
    assert set(deployments_needing_work().values_list("pk", flat=True)) == {
        short.pk,
        stopped_live.pk,
    }
    Node.objects.filter(pk=node.pk).update(status=NodeStatus.DRAINING)
    needing = set(deployments_needing_work().values_list("pk", flat=True))
    assert settled.pk in needing and drained.pk in needing  # their replicas must move
    assert not needing & set(
        Deployment.objects.filter(served_name=old_repo.full_name).values_list("pk", flat=True)
    )
    result = reconcile_pool()
    assert result["reconciled"] == 4


def test_auto_on_a_gpu_node_reserves_a_whole_gpu(repo, owner):
    gpu = ready_node("gpu", gpus=[{"index": 0}, {"index": 1}], engines=["transformers", "vllm"])
    dep = deploy_model(owner.user, repo, replicas=3)
    placed = dep.replica_set.filter(node=gpu)
    assert sorted(r.gpu_indices for r in placed) == [[0], [1]]
    assert {r.engine for r in placed} == {"vllm"}
    assert dep.replica_set.filter(status=ReplicaStatus.PENDING).count() == 1
