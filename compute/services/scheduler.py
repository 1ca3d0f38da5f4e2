"""Placement: bring each deployment's replicas to its desired count and put pending
replicas and workloads on ready nodes with room. Idempotent; safe to run from any process
at any time.

Replicas and workloads share a node's capacity: each takes one of its ``max_replicas``
slots, and a GPU held by either (on the node or stopping) is never given to another.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from compute.models import (
    Deployment,
    DeploymentStatus,
    Engine,
    Node,
    NodeStatus,
    Replica,
    ReplicaStatus,
    Workload,
    WorkloadStatus,
)

LEAVING = [NodeStatus.DRAINING, NodeStatus.DISABLED]


def reconcile_deployment(deployment: Deployment) -> None:
    """Create or retire replicas so the live count equals the desired count.

    Replicas on a draining node do not count: replacements are created (and placed on
    other nodes); the drained ones stop only as replacements become ready, so serving
    capacity never drops below the desired count while it can be met. With no other node
    to take them they keep running until an admin disables the node.
    """
    with transaction.atomic():
        dep = Deployment.objects.select_for_update().get(pk=deployment.pk)
        live = list(
            dep.replica_set.filter(status__in=ReplicaStatus.LIVE)
            .select_related("node")
            .order_by("-pk")
        )
        want = dep.replicas if dep.status == DeploymentStatus.ACTIVE else 0
        leaving = [r for r in live if r.node is not None and r.node.status in LEAVING]
        staying = [r for r in live if r not in leaving]
        for _ in range(want - len(staying)):
            Replica.objects.create(deployment=dep)
        extra = max(0, len(staying) - want)
        for replica in staying[:extra]:
            _retire(replica, "scaled down")
        serving = sum(r.status == ReplicaStatus.READY for r in staying[extra:])
        spare = serving + len(leaving) - want
        leaving.sort(key=lambda r: r.status == ReplicaStatus.READY)  # idle ones go first
        for replica in leaving[: max(0, spare)]:
            _retire(replica, f"replaced: node {replica.node} is leaving the pool")


def _retire(replica: Replica, reason: str) -> None:
    target = ReplicaStatus.STOPPING if replica.node_id else ReplicaStatus.STOPPED
    replica.transition(target, reason=reason)


def deployments_needing_work() -> QuerySet[Deployment]:
    """Deployments a reconcile pass must visit: active ones whose live count (replicas on
    draining or disabled nodes excluded) differs from the desired count or that still have
    replicas on such nodes, and stopped ones with live replicas. Everything else, e.g.
    every deployment stopped long ago, is not touched (nor locked)."""
    live = Q(replica_set__status__in=ReplicaStatus.LIVE)
    on_leaving = Q(replica_set__node__status__in=LEAVING)
    has_live = Exists(
        Replica.objects.filter(deployment=OuterRef("pk"), status__in=ReplicaStatus.LIVE)
    )
    # The WHERE keeps deployments stopped with nothing live out of the aggregation.
    candidates = Deployment.objects.filter(Q(status=DeploymentStatus.ACTIVE) | has_live)
    return candidates.annotate(
        staying=Count("replica_set", filter=live & ~on_leaving),
        leaving=Count("replica_set", filter=live & on_leaving),
    ).filter(
        Q(leaving__gt=0)
        | Q(status=DeploymentStatus.ACTIVE) & ~Q(staying=F("replicas"))
        | Q(status=DeploymentStatus.STOPPED, staying__gt=0)
    )


def release_disabled_nodes() -> int:
    """Replicas on disabled nodes are stopped at once: the node's token no longer works,
    so its agent can neither report nor be told anything (it stops its engines when the
    portal refuses it). They stop counting as live, so replacements are created. The
    node's workloads are requeued (stopping ones are stopped)."""
    from compute.services.nodes import release_workloads

    released = 0
    stuck = Replica.objects.filter(
        node__status=NodeStatus.DISABLED,
        status__in=[*ReplicaStatus.ON_NODE, ReplicaStatus.STOPPING],
    ).select_related("node")
    for replica in stuck:
        released += replica.transition(
            ReplicaStatus.STOPPED, reason=f"node {replica.node} disabled", url="", pid=None
        )
    held = Workload.objects.filter(
        node__status=NodeStatus.DISABLED, status__in=WorkloadStatus.ON_NODE
    ).values_list("node_id", flat=True)
    for node in Node.objects.filter(pk__in=set(held)):
        released += release_workloads(node, f"node {node.name} disabled")
    return released


def engine_on(node: Node, deployment: Deployment) -> str | None:
    """The engine a replica of ``deployment`` runs on ``node`` (``auto`` resolved: vLLM on
    a node with GPUs and vLLM, else transformers), or None if the node offers none."""
    engine = deployment.engine
    if engine == Engine.AUTO:
        engine = Engine.VLLM if node.gpus and "vllm" in node.engines else Engine.TRANSFORMERS
    if engine == Engine.VLLM and "vllm" not in node.engines:
        return None
    if engine == Engine.TRANSFORMERS and node.engines and "transformers" not in node.engines:
        return None
    return str(engine)


def gpus_needed(engine: str, deployment: Deployment) -> int:
    """Whole GPUs one replica reserves: ``gpus_per_replica`` (default 1) on a GPU engine
    (vLLM, or transformers with ``device=cuda``), none for transformers on CPU."""
    on_gpu = engine == Engine.VLLM or (deployment.engine_args or {}).get("device") == "cuda"
    return max(deployment.gpus_per_replica, 1) if on_gpu else 0


def node_fits(
    node: Node, deployment: Deployment, used_gpus: set[int]
) -> tuple[str, list[int]] | None:
    """The engine and GPU indices a replica would get on ``node``, or None if it does not
    fit. GPUs held by another replica on the node (``used_gpus``) are never shared."""
    engine = engine_on(node, deployment)
    if engine is None:
        return None
    need = gpus_needed(engine, deployment)
    indices = sorted(g["index"] for g in node.gpus if isinstance(g.get("index"), int))
    free = [i for i in indices if i not in used_gpus]
    if len(free) < need:
        return None
    return engine, free[:need]


def place_pending() -> int:
    """Assign pending replicas, then pending workloads, to ready nodes; return how many
    were placed."""
    placed = 0
    pending = Replica.objects.filter(
        status=ReplicaStatus.PENDING, deployment__status=DeploymentStatus.ACTIVE
    ).values_list("pk", flat=True)
    for pk in list(pending):
        placed += _place_one(pk)
    return placed + place_workloads()


def place_workloads() -> int:
    """Assign pending workloads to ready nodes, higher ``priority`` first, then oldest;
    one that fits nowhere now does not hold back smaller ones behind it."""
    pending = Workload.objects.filter(status=WorkloadStatus.PENDING).order_by(
        "-priority", "created_at", "pk"
    )
    return sum(_place_workload(pk) for pk in list(pending.values_list("pk", flat=True)))


def _nodes_with_a_free_slot() -> Iterator[tuple[Node, set[int]]]:
    """Ready nodes, least loaded first, each locked and with a slot free for one more
    replica or workload, with the GPU indices already held there."""
    for candidate in _candidate_nodes():
        node = Node.objects.select_for_update().get(pk=candidate.pk)
        slots, used = node_usage(node)
        if slots < node.max_replicas:
            yield node, used


def _candidate_nodes() -> list[Node]:
    return list(
        Node.objects.filter(status=NodeStatus.READY)
        .annotate(
            load=Count(
                "replicas",
                filter=Q(replicas__status__in=ReplicaStatus.ON_NODE),
                distinct=True,
            )
            + Count(
                "workloads",
                filter=Q(workloads__status__in=WorkloadStatus.ON_NODE),
                distinct=True,
            )
        )
        .order_by("load", "pk")
    )


def node_usage(node: Node) -> tuple[int, set[int]]:
    """The slots taken on ``node`` and the GPU indices held there, by replicas (on the node
    or stopping) and workloads (assigned, running or stopping). Call with the node locked."""
    replicas = list(
        node.replicas.filter(
            status__in=[*ReplicaStatus.ON_NODE, ReplicaStatus.STOPPING]
        ).values_list("gpu_indices", flat=True)
    )
    workloads = list(
        node.workloads.filter(status__in=WorkloadStatus.ON_NODE).values_list(
            "gpu_indices", flat=True
        )
    )
    held = [*replicas, *workloads]
    return len(held), {i for indices in held for i in (indices or [])}


def workload_gpus(node: Node, workload: Workload, used_gpus: set[int]) -> list[int] | None:
    """The GPU indices ``workload`` would get on ``node`` (``[]`` for a CPU workload), or
    None if it does not fit: too few free GPUs (of ``gpu_model``, matched case-insensitively
    in the reported name, when set), or for a CPU workload a node without the trainer."""
    if workload.gpus == 0:
        return [] if "trainer" in (node.engines or []) else None
    wanted = workload.gpu_model.strip().lower()
    free = sorted(
        g["index"]
        for g in node.gpus or []
        if isinstance(g.get("index"), int)
        and g["index"] not in used_gpus
        and wanted in str(g.get("name", "")).lower()
    )
    return free[: workload.gpus] if len(free) >= workload.gpus else None


@transaction.atomic
def _place_workload(workload_pk: int) -> int:
    from compute.services.workloads import transition

    workload = (
        Workload.objects.select_for_update(skip_locked=True)
        .filter(pk=workload_pk, status=WorkloadStatus.PENDING)
        .first()
    )
    if workload is None:
        return 0
    for node, used in _nodes_with_a_free_slot():
        gpus = workload_gpus(node, workload, used)
        if gpus is None:
            continue
        return int(
            transition(
                workload,
                WorkloadStatus.ASSIGNED,
                reason=f"placed on {node.name}",
                node=node,
                gpu_indices=gpus,
                assigned_at=timezone.now(),
            )
        )
    return 0


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
    for node, used in _nodes_with_a_free_slot():
        fit = node_fits(node, replica.deployment, used)
        if fit is None:
            continue
        engine, gpus = fit
        replica.transition(
            ReplicaStatus.ASSIGNED,
            reason=f"placed on {node.name}",
            node=node,
            engine=engine,
            gpu_indices=gpus,
            assigned_at=timezone.now(),
        )
        return 1
    return 0


def reconcile_pool() -> dict[str, int]:
    """One pass: liveness, disabled nodes, desired counts (only where work is needed),
    placement."""
    from compute.services.nodes import mark_silent_nodes_offline

    offline = mark_silent_nodes_offline()
    released = release_disabled_nodes()
    visited = 0
    for dep in deployments_needing_work().only("pk"):
        reconcile_deployment(dep)
        visited += 1
    return {
        "offline": len(offline),
        "released": released,
        "reconciled": visited,
        "placed": place_pending(),
    }
