"""Compute pool state. The database is the truth; agents and Celery only nudge it."""

from __future__ import annotations

import secrets
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone

from compute.metering.models import UsageHourly as UsageHourly
from compute.metering.models import UsageRecord as UsageRecord
from portal.models import ModelVersion


class NodeStatus(models.TextChoices):
    PENDING = "pending", "Token issued, never connected"
    READY = "ready", "Ready"
    OFFLINE = "offline", "Offline (missed heartbeats)"
    DRAINING = "draining", "Draining (no new work)"
    DISABLED = "disabled", "Disabled"


class Node(models.Model):
    name = models.CharField(max_length=100, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    token_prefix = models.CharField(max_length=20)
    status = models.CharField(max_length=16, choices=NodeStatus.choices, default=NodeStatus.PENDING)
    hostname = models.CharField(max_length=255, blank=True)
    address = models.CharField(
        max_length=255, blank=True, help_text="Host the portal reaches the node's replicas on"
    )
    pinned_address = models.CharField(
        max_length=255,
        blank=True,
        help_text="Set by an admin: replicas are reached here, whatever the agent reports",
    )
    resolved_ip = models.GenericIPAddressField(
        null=True,
        blank=True,
        help_text="The checked IP the gateway dials (the pinned or reported address, resolved "
        "once at registration: no later DNS rebinding)",
    )
    cpu_count = models.PositiveIntegerField(default=0)
    memory_bytes = models.BigIntegerField(default=0)
    gpus = models.JSONField(default=list, blank=True)
    engines = models.JSONField(default=list, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    agent_version = models.CharField(max_length=40, blank=True)
    max_replicas = models.PositiveIntegerField(default=4)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def gpu_count(self) -> int:
        return len(self.gpus or [])


class DeploymentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    STOPPED = "stopped", "Stopped"


class Engine(models.TextChoices):
    AUTO = "auto", "vLLM on GPU nodes, transformers on CPU nodes"
    TRANSFORMERS = "transformers", "transformers (CPU)"
    VLLM = "vllm", "vLLM (GPU)"


def watermark_secret() -> str:
    return secrets.token_urlsafe(32)


class Deployment(models.Model):
    """A model version served under ``served_name`` by ``replicas`` engine replicas."""

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="deployments"
    )
    served_name = models.CharField(max_length=200, db_index=True)
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.AUTO)
    replicas = models.PositiveIntegerField(default=1)
    # 0: the engine's default (one whole GPU for GPU engines, none for transformers on CPU).
    gpus_per_replica = models.PositiveIntegerField(default=0)
    engine_args = models.JSONField(default=dict, blank=True)
    # The secret of the green-list text watermark (engine_args ``watermark``): the engine
    # plants it, the detector needs it back, so it is kept like a replica's secret (not
    # hashed) and never shown: it reaches the engine only through the agent's environment.
    watermark_key = models.CharField(max_length=64, default=watermark_secret, editable=False)
    status = models.CharField(
        max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.ACTIVE
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["served_name"],
                condition=models.Q(status="active"),
                name="one_active_deployment_per_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.served_name} x{self.replicas}"

    @property
    def watermarked(self) -> bool:
        """Whether its engines plant the text watermark (engine_args ``watermark``)."""
        return (self.engine_args or {}).get("watermark") is True


def replica_secret() -> str:
    return secrets.token_urlsafe(32)


class ReplicaStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a node"
    ASSIGNED = "assigned", "Assigned to a node"
    STARTING = "starting", "Engine starting"
    READY = "ready", "Ready"
    FAILED = "failed", "Engine exited; the agent restarts it"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"

    ON_NODE: ClassVar[list[str]]
    LIVE: ClassVar[list[str]]


ReplicaStatus.ON_NODE = [
    ReplicaStatus.ASSIGNED,
    ReplicaStatus.STARTING,
    ReplicaStatus.READY,
    ReplicaStatus.FAILED,
]
ReplicaStatus.LIVE = [ReplicaStatus.PENDING, *ReplicaStatus.ON_NODE]

# What an agent may report, and what the control plane accepts from each state.
AGENT_TRANSITIONS: dict[str, set[str]] = {
    ReplicaStatus.ASSIGNED: {ReplicaStatus.STARTING, ReplicaStatus.READY, ReplicaStatus.FAILED},
    ReplicaStatus.STARTING: {ReplicaStatus.READY, ReplicaStatus.FAILED},
    ReplicaStatus.READY: {ReplicaStatus.STARTING, ReplicaStatus.FAILED},
    ReplicaStatus.FAILED: {ReplicaStatus.STARTING, ReplicaStatus.READY},
    ReplicaStatus.STOPPING: {ReplicaStatus.STOPPED},
}


class Replica(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="replica_set")
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="replicas"
    )
    status = models.CharField(
        max_length=16, choices=ReplicaStatus.choices, default=ReplicaStatus.PENDING, db_index=True
    )
    gpu_indices = models.JSONField(default=list, blank=True)
    # The engine chosen at placement (``auto`` resolved for the node): the agent runs this one.
    engine = models.CharField(max_length=16, blank=True)
    url = models.CharField(max_length=255, blank=True)
    # The engine's own API key: the agent starts the engine with it and the gateway
    # sends it, so a replica's port answers no one else.
    secret = models.CharField(max_length=64, default=replica_secret, editable=False)
    pid = models.IntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # Names of the LoRA adapters its engine reports loaded (routes for those names).
    adapters = models.JSONField(default=list, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"replica {self.pk} of {self.deployment.served_name} [{self.status}]"

    def transition(self, new: str, reason: str = "", **fields: object) -> bool:
        """Compare-and-swap the status; log the change. False if someone moved it first."""
        old = self.status
        if old == new and not fields:
            return True
        values: dict[str, object] = {"status": new, "updated_at": timezone.now(), **fields}
        if new == ReplicaStatus.READY and old != new:
            values["ready_at"] = timezone.now()
        changed = Replica.objects.filter(pk=self.pk, status=old).update(**values)
        if not changed:
            return False
        for name, value in values.items():
            setattr(self, name, value)
        if old != new:
            ReplicaEvent.objects.create(
                replica=self, old_status=old, new_status=new, reason=reason[:500]
            )
        return True


class ReplicaEvent(models.Model):
    """Every replica status change: the audit trail of the pool."""

    replica = models.ForeignKey(Replica, on_delete=models.CASCADE, related_name="events")
    old_status = models.CharField(max_length=16)
    new_status = models.CharField(max_length=16)
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.replica_id}: {self.old_status} → {self.new_status}"


class ServedAdapter(models.Model):
    """A LoRA adapter version served on the replicas of a base deployment under its own
    name (multi-LoRA: many fine-tunes share one base replica). The agent loads it into each
    replica's engine and reports it in ``Replica.adapters``; the gateway routes the name to
    the replicas that have it loaded."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="adapters")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="served_as_adapter"
    )
    served_name = models.CharField(max_length=300, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.served_name} on {self.deployment.served_name}"


class WorkloadStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a node"
    ASSIGNED = "assigned", "Assigned to a node"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Exited successfully"
    FAILED = "failed", "Failed"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"

    ON_NODE: ClassVar[list[str]]
    FINAL: ClassVar[list[str]]


WorkloadStatus.ON_NODE = [
    WorkloadStatus.ASSIGNED,
    WorkloadStatus.RUNNING,
    WorkloadStatus.STOPPING,
]
WorkloadStatus.FINAL = [WorkloadStatus.SUCCEEDED, WorkloadStatus.FAILED, WorkloadStatus.STOPPED]


class Workload(models.Model):
    """One run of a sub-platform's process on a pool node (a fine-tune's runner): placed by
    the scheduler against the same GPUs and slots as replicas, pulled by the node's agent as
    part of its desired state. ``kind`` names the sub-platform's registered handler and
    ``ref`` its own id (a job id). The runner's token is an HMAC of the id and ``attempt``
    (nothing stored); a requeue (runner or node lost) bumps ``attempt``, so a superseded
    runner's token stops working."""

    kind = models.CharField(max_length=32)
    ref = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=WorkloadStatus.choices, default=WorkloadStatus.PENDING, db_index=True
    )
    attempt = models.PositiveIntegerField(default=1)
    max_attempts = models.PositiveIntegerField(default=3)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="workloads"
    )
    gpus = models.PositiveIntegerField(default=0)
    gpu_model = models.CharField(max_length=100, blank=True)
    priority = models.IntegerField(default=0)
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="workloads"
    )
    gpu_indices = models.JSONField(default=list, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "ref"], name="one_workload_per_ref"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.ref} #{self.attempt} [{self.status}]"
