from django.contrib import admin

from compute.models import Deployment, Node, Replica, ReplicaEvent


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "status", "hostname", "cpu_count", "gpu_count", "last_heartbeat_at"]
    readonly_fields = ["token_hash", "token_prefix"]


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
