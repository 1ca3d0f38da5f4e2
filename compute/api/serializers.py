from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from compute.models import Deployment, Engine, Node, NodeStatus, Replica

MAX_GPUS = 64


class NodeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "status",
            "hostname",
            "address",
            "pinned_address",
            "resolved_ip",
            "cpu_count",
            "memory_bytes",
            "gpus",
            "engines",
            "labels",
            "agent_version",
            "max_replicas",
            "last_heartbeat_at",
            "registered_at",
            "created_at",
            "token_prefix",
        ]
        read_only_fields = [
            f for f in fields if f not in ("name", "labels", "max_replicas", "pinned_address")
        ]

    def validate_pinned_address(self, value: str) -> str:
        from compute.services.nodes import check_node_address

        return check_node_address(value) if value else value


class NodeUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """What an admin may change on a node: drain/disable/readmit it, pin its address."""

    status = serializers.ChoiceField(
        choices=[NodeStatus.READY, NodeStatus.DRAINING, NodeStatus.DISABLED], required=False
    )
    pinned_address = serializers.CharField(max_length=255, allow_blank=True, required=False)
    labels = serializers.DictField(child=serializers.CharField(max_length=200), required=False)
    max_replicas = serializers.IntegerField(min_value=0, max_value=1024, required=False)


def shows_details(context: Mapping[str, Any], dep: Deployment) -> bool:
    """Whether the request may see a deployment's internals: log tails, replica URLs and
    nodes, GPUs, engine arguments. Only the deployment's owner (a writer of its model) and
    admins; other readers of a public model see status only. ``owner_repos`` in the
    context: the repo ids the requester may write, or None for an admin."""
    if "owner_repos" not in context:
        return False
    owned = context["owner_repos"]
    return owned is None or dep.model_version.repo_id in owned


# Internals replaced by their empty value (the fields stay, so the schema holds) for
# readers who are not the owner or an admin.
PRIVATE_REPLICA_FIELDS: dict[str, Any] = {
    "url": "",
    "last_error": "",
    "node": None,
    "gpu_indices": [],
    "restarts": 0,
}


class ReplicaSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    node = serializers.CharField(source="node.name", default=None, read_only=True)

    def to_representation(self, instance: Replica) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if not shows_details(self.context, instance.deployment):
            data.update(PRIVATE_REPLICA_FIELDS)
        return data

    class Meta:
        model = Replica
        fields = [
            "id",
            "status",
            "node",
            "url",
            "restarts",
            "last_error",
            "gpu_indices",
            "assigned_at",
            "ready_at",
            "updated_at",
        ]
        read_only_fields = fields


class DeploymentSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    model = serializers.CharField(source="served_name", read_only=True)
    version = serializers.IntegerField(source="model_version.number", read_only=True)
    replica_set = ReplicaSerializer(many=True, read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "model",
            "version",
            "engine",
            "replicas",
            "gpus_per_replica",
            "engine_args",
            "status",
            "created_at",
            "replica_set",
        ]
        read_only_fields = ["id", "model", "version", "status", "created_at", "replica_set"]

    def to_representation(self, instance: Deployment) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if not shows_details(self.context, instance):
            data["engine_args"] = {}
        return data


class DeploymentCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    model = serializers.CharField(max_length=200)
    version = serializers.IntegerField(required=False, min_value=1)
    replicas = serializers.IntegerField(default=1, min_value=0, max_value=64)
    engine = serializers.ChoiceField(choices=Engine.choices, default=Engine.AUTO)
    gpus_per_replica = serializers.IntegerField(default=0, min_value=0, max_value=MAX_GPUS)
    engine_args = serializers.DictField(required=False, default=dict)


class GPUSerializer(serializers.Serializer):  # type: ignore[type-arg]
    index = serializers.IntegerField(min_value=0, max_value=1024)
    name = serializers.CharField(max_length=200, allow_blank=True, default="")
    uuid = serializers.CharField(max_length=200, allow_blank=True, default="")
    memory_bytes = serializers.IntegerField(min_value=0, default=0)


class InventorySerializer(serializers.Serializer):  # type: ignore[type-arg]
    hostname = serializers.CharField(max_length=255)
    address = serializers.CharField(max_length=255, default="127.0.0.1")
    cpu_count = serializers.IntegerField(min_value=0, max_value=100000)
    memory_bytes = serializers.IntegerField(min_value=0)
    gpus = GPUSerializer(many=True, default=list)
    engines = serializers.ListField(
        child=serializers.CharField(max_length=40), max_length=16, default=list
    )
    agent_version = serializers.CharField(max_length=40, default="")


class ReplicaReportSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField(min_value=1)
    status = serializers.ChoiceField(choices=["starting", "ready", "failed", "stopped"])
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    pid = serializers.IntegerField(required=False, allow_null=True)
    restarts = serializers.IntegerField(min_value=0, required=False)
    error = serializers.CharField(required=False, allow_blank=True, max_length=8000)
    # The LoRA adapters loaded in the replica's engine (absent: an agent that has none).
    adapters = serializers.ListField(
        child=serializers.CharField(max_length=300), max_length=256, required=False
    )


class WorkloadReportSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField(min_value=1)
    attempt = serializers.IntegerField(min_value=1, max_value=1 << 30)
    status = serializers.ChoiceField(
        choices=["fetching", "running", "succeeded", "failed", "stopped"]
    )
    exit_code = serializers.IntegerField(
        required=False, allow_null=True, min_value=-1024, max_value=1024
    )
    pid = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    error = serializers.CharField(required=False, allow_blank=True, max_length=8000)


class HeartbeatSerializer(serializers.Serializer):  # type: ignore[type-arg]
    replicas = serializers.ListField(child=ReplicaReportSerializer(), max_length=256, default=list)
    workloads = serializers.ListField(child=WorkloadReportSerializer(), max_length=64, default=list)
