"""Nodes join with a token issued by an admin, then report and pull their desired state."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from compute.models import (
    AGENT_TRANSITIONS,
    Node,
    NodeStatus,
    Replica,
    ReplicaStatus,
    Workload,
    WorkloadStatus,
)
from compute.services import workloads
from compute.services.trust import check_replica_port, resolve_node_address
from portal.errors import NotFound, PermissionDenied, PlatformError
from portal.models.keys import hash_key

NODE_TOKEN_PREFIX = "mnode-"  # noqa: S105 - a prefix, not a secret
MAX_REPORTED_REPLICAS = 256
MAX_REPORTED_WORKLOADS = 64


def check_node_address(value: str) -> str:
    """``value`` trimmed, if it resolves only to addresses a node may have; else a 400."""
    resolve_node_address(value)
    return value.strip()


def create_node(
    actor: Any, name: str, labels: dict[str, str] | None = None, *, pinned_address: str = ""
) -> tuple[Node, str]:
    """Issue a node and its token (returned once, stored hashed). Admins only."""
    if not getattr(actor, "is_staff", False):
        raise PermissionDenied("Only administrators may add nodes to the pool.")
    if Node.objects.filter(name=name).exists():
        raise PlatformError(f"A node named '{name}' exists.", code="name_taken", status=409)
    raw = NODE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    pinned = pinned_address.strip()
    node = Node.objects.create(
        name=name,
        token_hash=hash_key(raw),
        token_prefix=raw[:14],
        labels=labels or {},
        pinned_address=pinned,
        resolved_ip=resolve_node_address(pinned) if pinned else None,
        created_by=actor,
    )
    return node, raw


def pin_node_address(actor: Any, node: Node, address: str) -> Node:
    """Reach ``node``'s replicas at ``address`` (checked and resolved now), or unpin it."""
    if not getattr(actor, "is_staff", False):
        raise PermissionDenied("Only administrators may pin node addresses.")
    node.pinned_address = address.strip()
    target = node.pinned_address or node.address
    node.resolved_ip = resolve_node_address(target) if target else None
    node.save(update_fields=["pinned_address", "resolved_ip"])
    return node


def rotate_node_token(node: Node) -> str:
    """Give ``node`` a new token (the old one stops working) and return it once."""
    raw = NODE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    Node.objects.filter(pk=node.pk).update(token_hash=hash_key(raw), token_prefix=raw[:14])
    return raw


def node_for_token(raw: str) -> Node | None:
    if not raw.startswith(NODE_TOKEN_PREFIX) or len(raw) > 200:
        return None
    return Node.objects.exclude(status=NodeStatus.DISABLED).filter(token_hash=hash_key(raw)).first()


@dataclass
class Inventory:
    hostname: str
    address: str
    cpu_count: int
    memory_bytes: int
    gpus: list[dict[str, Any]]
    engines: list[str]
    agent_version: str


def register_node(node: Node, inventory: Inventory) -> Node:
    """Record what the agent found on its host; the node becomes ready.

    An agent registers when it starts, with no engine running (its engines die with
    it), so replicas the database still places there as running are started again, and
    its workloads' processes are gone: they are requeued (a new attempt, on any node).
    """
    now = timezone.now()
    node.hostname = inventory.hostname[:255]
    node.address = inventory.address.strip()[:255]
    # The address the gateway will dial, checked and resolved once, here: the admin's pin
    # wins over what the agent reports (and then the report is not dialled, so not checked).
    node.resolved_ip = resolve_node_address(node.pinned_address or node.address)
    node.cpu_count = inventory.cpu_count
    node.memory_bytes = inventory.memory_bytes
    node.gpus = inventory.gpus
    node.engines = inventory.engines
    node.agent_version = inventory.agent_version[:40]
    node.last_heartbeat_at = now
    node.registered_at = node.registered_at or now
    if node.status in (NodeStatus.PENDING, NodeStatus.OFFLINE):
        node.status = NodeStatus.READY
    node.save()
    running = [ReplicaStatus.STARTING, ReplicaStatus.READY, ReplicaStatus.FAILED]
    for replica in Replica.objects.filter(node=node, status__in=running):
        replica.transition(
            ReplicaStatus.ASSIGNED, reason="agent restarted", url="", pid=None, adapters=[]
        )
    release_workloads(node, f"the agent on {node.name} restarted")
    return node


def release_workloads(node: Node, reason: str) -> int:
    """The node lost its workloads' processes (it went silent, was disabled, its agent
    restarted): the runnable ones are requeued, stopping ones are stopped. Returns how
    many rows changed."""
    changed = 0
    for workload in Workload.objects.filter(node=node, status__in=WorkloadStatus.ON_NODE):
        if workload.status == WorkloadStatus.STOPPING:
            changed += workloads.transition(
                workload, WorkloadStatus.STOPPED, reason, finished_at=timezone.now()
            )
        else:
            changed += workloads.requeue(workload, reason)
    return changed


def heartbeat(node: Node, reports: list[dict[str, Any]]) -> None:
    """Apply the agent's replica reports and mark the node alive."""
    if len(reports) > MAX_REPORTED_REPLICAS:
        raise PlatformError("Too many replica reports.", param="replicas")
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now())
    if node.status == NodeStatus.OFFLINE:
        Node.objects.filter(pk=node.pk, status=NodeStatus.OFFLINE).update(status=NodeStatus.READY)
        node.status = NodeStatus.READY
    for report in reports:
        _apply_report(node, report)


def _apply_report(node: Node, report: dict[str, Any]) -> None:
    replica = Replica.objects.filter(pk=report["id"], node=node).first()
    if replica is None:
        return  # not ours (any more): the desired state tells the agent to stop it
    new = report["status"]
    allowed = AGENT_TRANSITIONS.get(replica.status, set())
    fields: dict[str, Any] = {}
    if new == ReplicaStatus.READY:
        fields["url"] = _replica_url(node, report.get("port"))
    if report.get("pid") is not None:
        fields["pid"] = report["pid"]
    if report.get("error"):
        fields["last_error"] = str(report["error"])[:4000]
    if "restarts" in report:
        fields["restarts"] = report["restarts"]
    if report.get("adapters") is not None:
        fields["adapters"] = sorted(set(report["adapters"]))
    if new == replica.status:
        changed = {k: v for k, v in fields.items() if getattr(replica, k) != v}
        if changed:
            replica.transition(new, **changed)
    elif new in allowed:
        replica.transition(
            new, reason=f"agent on {node.name}: {report.get('error') or new}", **fields
        )


def _replica_url(node: Node, port: Any) -> str:
    """``http://IP:port`` on the IP resolved at registration (never re-resolved here)."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise PlatformError("A ready replica needs its port.", param="port")
    ip = node.resolved_ip
    if not ip:  # registered before addresses were resolved: resolve (and check) once now
        ip = resolve_node_address(node.pinned_address or node.address or "127.0.0.1")
        Node.objects.filter(pk=node.pk).update(resolved_ip=ip)
        node.resolved_ip = ip
    check_replica_port(ip, port)
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def desired_replicas(node: Node) -> list[Replica]:
    """What the node should run now (everything assigned to it and not stopped)."""
    return list(
        Replica.objects.filter(node=node, status__in=ReplicaStatus.ON_NODE)
        .select_related("deployment__model_version__repo")
        .prefetch_related(
            "deployment__model_version__files", "deployment__adapters__model_version__files"
        )
        .order_by("pk")
    )


def apply_workload_reports(node: Node, reports: list[dict[str, Any]]) -> bool:
    """Apply the agent's workload reports; return whether a workload went back to pending.

    ``running`` from assigned starts the run; ``succeeded``/``failed`` finish it (a failed
    run is requeued while attempts are left); any end of a stopping run stops it. Reports
    of another attempt than the current one are ignored (a superseded run). A run the
    agent no longer reports after it was running is lost (requeued); a stopping one the
    agent no longer reports is stopped.
    """
    if len(reports) > MAX_REPORTED_WORKLOADS:
        raise PlatformError("Too many workload reports.", param="workloads")
    rows = {w.pk: w for w in Workload.objects.filter(node=node, status__in=WorkloadStatus.ON_NODE)}
    seen: set[int] = set()
    requeued = False
    for report in reports:
        workload = rows.get(report["id"])
        if workload is None or report["attempt"] != workload.attempt:
            continue
        seen.add(workload.pk)
        requeued |= _apply_workload_report(node, workload, report)
    for workload in rows.values():
        if workload.pk in seen:
            continue
        if workload.status == WorkloadStatus.RUNNING:
            requeued |= workloads.requeue(workload, f"the agent on {node.name} lost the run")
        elif workload.status == WorkloadStatus.STOPPING:
            workloads.transition(
                workload, WorkloadStatus.STOPPED, "agent stopped it", finished_at=timezone.now()
            )
    return requeued


def _apply_workload_report(node: Node, workload: Workload, report: dict[str, Any]) -> bool:
    status, now = report["status"], timezone.now()
    error = str(report.get("error") or "")[-4000:]
    pid = report.get("pid")
    code = report.get("exit_code")
    ended = status in ("succeeded", "failed", "stopped")
    if workload.status == WorkloadStatus.STOPPING:
        if ended:
            workloads.transition(
                workload, WorkloadStatus.STOPPED, "agent stopped it", finished_at=now
            )
        return False
    if status == "running":
        if workload.status == WorkloadStatus.ASSIGNED:
            workloads.transition(
                workload, WorkloadStatus.RUNNING, f"running on {node.name}", started_at=now, pid=pid
            )
        elif pid is not None and workload.pid != pid:
            workloads.transition(workload, workload.status, pid=pid)
        return False
    if status == "succeeded" and code in (0, None):
        workloads.transition(
            workload, WorkloadStatus.SUCCEEDED, "exited 0", finished_at=now, exit_code=0
        )
        return False
    if ended:  # failed, a non-zero "success", or stopped without being asked to
        reason = f"{status} on {node.name} (exit code {code}): {error[-500:]}".strip(": ")
        fields = {"finished_at": now, "exit_code": code, "last_error": error or reason}
        if workloads.transition(workload, WorkloadStatus.FAILED, reason, **fields):
            return workloads.requeue(workload, reason) and (
                workload.status == WorkloadStatus.PENDING
            )
    return False


def finish_stopping(node: Node, running_ids: set[int]) -> None:
    """Replicas told to stop that the agent no longer runs are stopped."""
    for replica in Replica.objects.filter(node=node, status=ReplicaStatus.STOPPING):
        if replica.pk not in running_ids:
            replica.transition(ReplicaStatus.STOPPED, reason="agent stopped it", url="")


@transaction.atomic
def mark_silent_nodes_offline() -> list[int]:
    """Nodes that missed heartbeats go offline; their replicas go back to pending, their
    workloads are requeued."""
    cutoff = timezone.now() - timedelta(seconds=settings.NODE_OFFLINE_AFTER_S)
    silent = list(
        Node.objects.select_for_update(skip_locked=True)
        .filter(status__in=[NodeStatus.READY, NodeStatus.DRAINING], last_heartbeat_at__lt=cutoff)
        .filter(
            # A silent draining node is revisited only while it still holds replicas.
            Q(status=NodeStatus.READY)
            | Exists(
                Replica.objects.filter(
                    node=OuterRef("pk"),
                    status__in=[*ReplicaStatus.ON_NODE, ReplicaStatus.STOPPING],
                )
            )
            | Exists(
                Workload.objects.filter(node=OuterRef("pk"), status__in=WorkloadStatus.ON_NODE)
            )
        )
    )
    for node in silent:
        if node.status == NodeStatus.READY:  # a draining node stays draining when back
            node.status = NodeStatus.OFFLINE
            node.save(update_fields=["status"])
        for replica in Replica.objects.filter(node=node, status__in=ReplicaStatus.ON_NODE):
            replica.transition(
                ReplicaStatus.PENDING,
                reason=f"node {node.name} went offline",
                node=None,
                url="",
                pid=None,
                adapters=[],
            )
        for replica in Replica.objects.filter(node=node, status=ReplicaStatus.STOPPING):
            replica.transition(
                ReplicaStatus.STOPPED, reason=f"node {node.name} went offline", url=""
            )
        release_workloads(node, f"node {node.name} went offline")
    return [n.pk for n in silent]


ADMIN_STATUSES = (NodeStatus.READY, NodeStatus.DRAINING, NodeStatus.DISABLED)


def set_node_status(actor: Any, node: Node, status: str) -> Node:
    """An admin drains (no new work; replicas move before they stop), disables (token
    refused; replicas stop now and come up elsewhere) or readmits a node."""
    from compute.services.scheduler import (
        deployments_needing_work,
        place_pending,
        reconcile_deployment,
        release_disabled_nodes,
    )

    if not getattr(actor, "is_staff", False):
        raise PermissionDenied("Only administrators may change a node's status.")
    if status not in ADMIN_STATUSES:
        raise PlatformError(f"status must be one of {', '.join(ADMIN_STATUSES)}.", param="status")
    if status == NodeStatus.READY and node.status != NodeStatus.READY:
        # Readmitted: it is ready only once its agent shows up again.
        status = NodeStatus.READY if node.last_heartbeat_at else NodeStatus.PENDING
    Node.objects.filter(pk=node.pk).update(status=status)
    node.status = status
    release_disabled_nodes()
    affected = Replica.objects.filter(node=node).values("deployment_id")
    for dep in deployments_needing_work().filter(pk__in=affected):
        reconcile_deployment(dep)
    place_pending()
    return node


def get_node(pk: int) -> Node:
    node = Node.objects.filter(pk=pk).first()
    if node is None:
        raise NotFound("No such node.")
    return node
