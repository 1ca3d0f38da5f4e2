"""Placement: bring each deployment's replicas to its desired count and put pending
replicas on ready nodes with room. Idempotent; safe to run from any process at any time.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from compute.models import (
    Deployment,
    DeploymentStatus,
    Engine,
    Node,
    NodeStatus,
    Replica,
    ReplicaStatus,
)


def reconcile_deployment(deployment: Deployment) -> None:
    """Create or retire replicas so the live count equals the desired count."""
    with transaction.atomic():
        dep = Deployment.objects.select_for_update().get(pk=deployment.pk)
        live = list(dep.replica_set.filter(status__in=ReplicaStatus.LIVE).order_by("-pk"))
        want = dep.replicas if dep.status == DeploymentStatus.ACTIVE else 0
        for _ in range(want - len(live)):
            Replica.objects.create(deployment=dep)
        for replica in live[: max(0, len(live) - want)]:
            target = ReplicaStatus.STOPPING if replica.node_id else ReplicaStatus.STOPPED
            replica.transition(target, reason="scaled down")


def node_fits(node: Node, deployment: Deployment, used_gpus: set[int]) -> list[int] | None:
    """The GPU indices a replica would get on ``node``, or None if it does not fit."""
    engine = deployment.engine
    if engine == Engine.VLLM and "vllm" not in node.engines:
        return None
    if engine == Engine.TRANSFORMERS and node.engines and "transformers" not in node.engines:
        return None
    need = deployment.gpus_per_replica
    if engine == Engine.VLLM:
        need = max(need, 1)
    free = [g["index"] for g in node.gpus if g.get("index") not in used_gpus]
    if len(free) < need:
        return None
    return free[:need]


def place_pending() -> int:
    """Assign pending replicas to ready nodes; return how many were placed."""
    placed = 0
    pending = Replica.objects.filter(
        status=ReplicaStatus.PENDING, deployment__status=DeploymentStatus.ACTIVE
    ).values_list("pk", flat=True)
    for pk in list(pending):
        placed += _place_one(pk)
    return placed


def _candidate_nodes() -> list[Node]:
    return list(
        Node.objects.filter(status=NodeStatus.READY)
        .annotate(load=Count("replicas", filter=Q(replicas__status__in=ReplicaStatus.ON_NODE)))
        .order_by("load", "pk")
    )


@transaction.atomic
def _place_one(replica_pk: int) -> int:
    replica = (
        Replica.objects.select_for_update(skip_locked=True)
        .select_related("deployment")
        .filter(pk=replica_pk, status=ReplicaStatus.PENDING)
        .first()
    )
    if replica is None:
        return 0
    for node in _candidate_nodes():
        node = Node.objects.select_for_update().get(pk=node.pk)
        on_node = list(
            node.replicas.filter(status__in=[*ReplicaStatus.ON_NODE, ReplicaStatus.STOPPING])
        )
        if len(on_node) >= node.max_replicas:
            continue
        used = {i for r in on_node for i in (r.gpu_indices or [])}
        gpus = node_fits(node, replica.deployment, used)
        if gpus is None:
            continue
        replica.transition(
            ReplicaStatus.ASSIGNED,
            reason=f"placed on {node.name}",
            node=node,
            gpu_indices=gpus,
            assigned_at=timezone.now(),
        )
        return 1
    return 0


def reconcile_pool() -> dict[str, int]:
    """One full pass: liveness, desired counts, placement."""
    from compute.services.nodes import mark_silent_nodes_offline

    offline = mark_silent_nodes_offline()
    for dep in Deployment.objects.all():
        reconcile_deployment(dep)
    return {"offline": len(offline), "placed": place_pending()}
