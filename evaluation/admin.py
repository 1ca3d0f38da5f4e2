"""The evaluation sub-platform in Django's admin: for the platform's staff to look. Runs
move only through their transitions and keys stay encrypted, so both are read-only."""

from __future__ import annotations

from django.contrib import admin

from evaluation.models import (
    Arena,
    Battle,
    Endpoint,
    EvalRun,
    EvalRunEvent,
    EvalSuite,
    EvalTask,
    Leaderboard,
    Submission,
    SuiteTask,
)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(EvalTask)
class EvalTaskAdmin(ReadOnlyAdmin):
    list_display = ["namespace", "name", "output_type", "visibility", "builtin", "updated_at"]
    list_filter = ["output_type", "builtin", "visibility"]
    search_fields = ["namespace", "name", "description"]


class SuiteTaskInline(admin.TabularInline):  # type: ignore[type-arg]
    model = SuiteTask
    extra = 0
    can_delete = False
    fields = ("position", "task", "weight")
    readonly_fields = fields


@admin.register(EvalSuite)
class EvalSuiteAdmin(ReadOnlyAdmin):
    list_display = ["namespace", "name", "aggregation", "visibility", "builtin", "updated_at"]
    list_filter = ["aggregation", "builtin", "visibility"]
    search_fields = ["namespace", "name", "description"]
    inlines = [SuiteTaskInline]


@admin.register(Endpoint)
class EndpointAdmin(ReadOnlyAdmin):
    list_display = ["namespace", "name", "base_url", "model", "key_hint", "created_at"]
    search_fields = ["namespace", "name", "base_url", "model"]
    exclude = ["api_key_encrypted"]


class EventInline(admin.TabularInline):  # type: ignore[type-arg]
    model = EvalRunEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "level", "message", "old_status", "new_status")
    readonly_fields = fields


@admin.register(EvalRun)
class EvalRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "namespace", "model_name", "suite", "task", "status", "progress"]
    list_filter = ["status", "source"]
    search_fields = ["id", "namespace", "model_name", "fine_tuning_job_id"]
    exclude = ["api_key_encrypted"]
    inlines = [EventInline]


@admin.register(Leaderboard)
class LeaderboardAdmin(ReadOnlyAdmin):
    list_display = ["namespace", "name", "suite", "visibility", "created_at"]
    search_fields = ["namespace", "name", "title"]


@admin.register(Submission)
class SubmissionAdmin(ReadOnlyAdmin):
    list_display = ["leaderboard", "model_name", "status", "run", "created_at"]
    list_filter = ["status"]


@admin.register(Arena)
class ArenaAdmin(ReadOnlyAdmin):
    list_display = ["namespace", "name", "visibility", "ratings_votes", "created_at"]
    search_fields = ["namespace", "name", "title"]


@admin.register(Battle)
class BattleAdmin(ReadOnlyAdmin):
    list_display = ["id", "arena", "model_a", "model_b", "winner", "created_at"]
    list_filter = ["winner"]
