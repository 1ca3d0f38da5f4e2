from typing import Any

from django import forms
from django.contrib import admin

from compute.models import Deployment, Node, Replica, ReplicaEvent, ServedAdapter, Workload
from compute.services.trust import resolve_node_address
from portal.errors import PlatformError


class NodeForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Node
        fields = ["name", "status", "pinned_address", "labels", "max_replicas"]

    def clean(self) -> dict[str, Any]:
        """A pinned address is checked and resolved as through the API (trust boundary)."""
        data: dict[str, Any] = super().clean() or {}
        pinned = (data.get("pinned_address") or "").strip()
        target = pinned or self.instance.address
        try:
            self.instance.resolved_ip = resolve_node_address(target) if target else None
        except PlatformError as exc:
            raise forms.ValidationError({"pinned_address": exc.message}) from None
        data["pinned_address"] = pinned
        return data


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = NodeForm
    list_display = ["name", "status", "hostname", "cpu_count", "gpu_count", "last_heartbeat_at"]
    readonly_fields = ["token_hash", "token_prefix", "address", "resolved_ip"]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["served_name", "engine", "replicas", "status", "created_at"]


@admin.register(Replica)
class ReplicaAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["pk", "deployment", "node", "status", "url", "restarts", "updated_at"]
    list_filter = ["status"]


@admin.register(ReplicaEvent)
class ReplicaEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["replica", "old_status", "new_status", "reason", "created_at"]


@admin.register(Workload)
class WorkloadAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["pk", "kind", "ref", "status", "attempt", "node", "gpus", "updated_at"]
    list_filter = ["status", "kind"]
    search_fields = ["ref"]


@admin.register(ServedAdapter)
class ServedAdapterAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["served_name", "deployment", "model_version", "created_at"]
