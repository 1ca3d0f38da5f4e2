"""Fine-tuning jobs in Django's admin: for the platform's staff to look, not to edit what
services own (jobs move only through their transitions)."""

from __future__ import annotations

from django.contrib import admin

from training.models import FineTuningCheckpoint, FineTuningEvent, FineTuningJob


class EventInline(admin.TabularInline):  # type: ignore[type-arg]
    model = FineTuningEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "type", "level", "message", "old_status", "new_status")
    readonly_fields = fields


class CheckpointInline(admin.TabularInline):  # type: ignore[type-arg]
    model = FineTuningCheckpoint
    extra = 0
    can_delete = False
    fields = ("id", "step", "complete", "attempt", "metrics", "created_at")
    readonly_fields = fields


@admin.register(FineTuningJob)
class FineTuningJobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "namespace", "model_name", "method", "status", "progress", "created_at"]
    list_filter = ["status", "method", "task"]
    search_fields = ["id", "namespace", "model_name", "fine_tuned_model", "training_file"]
    readonly_fields = [field.name for field in FineTuningJob._meta.fields]
    inlines = [CheckpointInline, EventInline]

    def has_add_permission(self, request: object) -> bool:
        return False
