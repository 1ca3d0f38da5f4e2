"""The dataset hub in Django's admin: for the platform's staff to look, not to edit
what services own (versions are immutable, jobs move only through the runner)."""

from __future__ import annotations

from django.contrib import admin

from datasets.models import (
    DatasetFile,
    DatasetJob,
    DatasetJobEvent,
    DatasetRepo,
    DatasetUse,
    DatasetVersion,
    File,
)


class DatasetVersionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DatasetVersion
    fk_name = "repo"
    extra = 0
    can_delete = False
    fields = ("number", "state", "origin", "format", "rows", "total_bytes", "created_at")
    readonly_fields = fields


@admin.register(DatasetRepo)
class DatasetRepoAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["namespace", "name", "visibility", "origin", "star_count", "updated_at"]
    list_filter = ["visibility", "origin", "license"]
    search_fields = ["namespace", "name", "description"]
    readonly_fields = ["star_count", "download_count", "created_by", "created_at", "updated_at"]
    inlines = [DatasetVersionInline]


class DatasetFileInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DatasetFile
    extra = 0
    can_delete = False
    fields = ("path", "split", "size", "sha256", "rows", "object_key", "parquet_key")
    readonly_fields = fields


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["repo", "number", "state", "origin", "format", "rows", "created_at"]
    list_filter = ["state", "origin", "format"]
    search_fields = ["repo__namespace", "repo__name", "revision"]
    readonly_fields = [f.name for f in DatasetVersion._meta.fields]
    inlines = [DatasetFileInline]


class DatasetJobEventInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DatasetJobEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "level", "message", "old_status", "new_status")
    readonly_fields = fields


@admin.register(DatasetJob)
class DatasetJobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["pk", "kind", "repo", "status", "progress", "attempts", "created_at"]
    list_filter = ["kind", "status"]
    search_fields = ["repo__namespace", "repo__name"]
    readonly_fields = [f.name for f in DatasetJob._meta.fields]
    inlines = [DatasetJobEventInline]


@admin.register(DatasetUse)
class DatasetUseAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["version", "kind", "ref", "active", "created_at"]
    list_filter = ["kind", "active"]
    search_fields = ["ref"]


@admin.register(File)
class FileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "namespace", "purpose", "filename", "bytes", "created_at"]
    list_filter = ["purpose"]
    search_fields = ["id", "filename", "namespace"]
    readonly_fields = ["version", "bytes", "created_at"]
