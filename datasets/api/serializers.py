"""Shapes of the dataset hub's API: what goes in (validated here, acted on by services)
and what comes out (repos, versions, files, jobs, viewer pages)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from datasets.models import DatasetFile, DatasetJob, DatasetJobEvent, DatasetRepo, DatasetVersion
from portal.models import Visibility

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MODEL_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
MAX_INT = 2**31 - 1
SORTS = {
    "stars": "-star_count",
    "downloads": "-download_count",
    "updated": "-updated_at",
    "created": "-created_at",
}


# A plain serializer (input or output), never saved; no docstring, so that none is
# inherited into the OpenAPI descriptions of its subclasses.
class Serializer(serializers.Serializer):  # type: ignore[type-arg]
    pass


# Repos ---------------------------------------------------------------------------------


class DatasetRepoSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.CharField(source="full_name", read_only=True, help_text="namespace/name")
    card = serializers.CharField(read_only=True, help_text="README body (front matter removed)")
    card_data = serializers.JSONField(read_only=True, help_text="The card's front matter")
    origin = serializers.CharField(read_only=True, help_text="hub, or files (/v1/files)")
    stars = serializers.IntegerField(source="star_count", read_only=True)
    downloads = serializers.IntegerField(source="download_count", read_only=True)
    starred = serializers.SerializerMethodField()
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = DatasetRepo
        fields = [
            "id",
            "namespace",
            "name",
            "visibility",
            "description",
            "card",
            "card_data",
            "license",
            "languages",
            "tags",
            "task_categories",
            "size_category",
            "origin",
            "stars",
            "downloads",
            "starred",
            "latest_version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_starred(self, repo: DatasetRepo) -> bool:
        """Whether the asking user starred it (annotated by the viewset's queryset)."""
        return bool(getattr(repo, "is_starred", False))

    def get_latest_version(self, repo: DatasetRepo) -> int | None:
        number = getattr(repo, "latest_number", None)
        return int(number) if number is not None else None


class RepoCreateSerializer(Serializer):
    owner = serializers.RegexField(
        NAME_RE, required=False, help_text="Your username (default) or an organisation you manage"
    )
    name = serializers.RegexField(NAME_RE, max_length=96)
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PRIVATE)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    card = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200_000,
        help_text="README.md text; its YAML front matter sets license, language, tags, …",
    )


class RepoUpdateSerializer(Serializer):
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    card = serializers.CharField(required=False, allow_blank=True, max_length=200_000)


class RepoQuerySerializer(Serializer):
    search = serializers.CharField(required=False, max_length=200)
    task_categories = serializers.CharField(required=False, max_length=64)
    language = serializers.CharField(required=False, max_length=64)
    license = serializers.CharField(required=False, max_length=64)
    owner = serializers.CharField(required=False, max_length=64)
    sort = serializers.ChoiceField(choices=list(SORTS), required=False)


# Versions and files -------------------------------------------------------------------


class DatasetFileSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = DatasetFile
        fields = ["path", "split", "size", "sha256", "rows"]
        read_only_fields = fields


class VersionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    # Declared fields leave the class (DRF's metaclass), so ``parent`` shadows nothing.
    parent = serializers.SerializerMethodField(  # type: ignore[assignment]
        help_text="The number of the version it came from"
    )

    class Meta:
        model = DatasetVersion
        fields = [
            "number",
            "revision",
            "state",
            "origin",
            "format",
            "rows",
            "total_bytes",
            "message",
            "parent",
            "created_at",
            "settled_at",
        ]
        read_only_fields = fields

    def get_parent(self, version: DatasetVersion) -> int | None:
        parent = version.parent
        return parent.number if parent is not None else None


class VersionDetailSerializer(VersionSerializer):
    files = DatasetFileSerializer(many=True, read_only=True)
    report = serializers.JSONField(
        read_only=True, help_text="Validation report per file path (problems with line numbers)"
    )
    stats = serializers.JSONField(read_only=True, help_text="The statistics job's result")
    steps = serializers.JSONField(read_only=True, help_text="Processing steps that made it")

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "files", "report", "stats", "tokenizer", "steps"]
        read_only_fields = fields


class VersionUploadSerializer(Serializer):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=False, use_url=False),
        allow_empty=False,
        max_length=100,
        help_text="One or more small files (JSONL, CSV or Parquet)",
    )
    message = serializers.CharField(required=False, allow_blank=True, max_length=200)


class UploadFileSerializer(Serializer):
    path = serializers.CharField(max_length=200)
    size = serializers.IntegerField(min_value=1, max_value=2**62)


class UploadStartSerializer(Serializer):
    files = UploadFileSerializer(many=True, allow_empty=False, max_length=100)  # type: ignore[call-arg]
    message = serializers.CharField(required=False, allow_blank=True, max_length=200)


class UploadPlanFileSerializer(Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()
    part_size = serializers.IntegerField()
    urls = serializers.ListField(child=serializers.URLField(), help_text="PUT part n to urls[n-1]")


class UploadPlanSerializer(Serializer):
    version = serializers.IntegerField()
    files = UploadPlanFileSerializer(many=True)


class UploadCompleteSerializer(Serializer):
    parts = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(max_length=200), max_length=10_000),
        help_text="Per file path, the ETags of its parts in order",
    )


class DownloadSerializer(Serializer):
    url = serializers.URLField()
    expires_in = serializers.IntegerField(help_text="Seconds")


class LineageSerializer(Serializer):
    ancestors = serializers.ListField(child=serializers.DictField())
    children = serializers.ListField(child=serializers.DictField())
    hidden_children = serializers.IntegerField()
    made_by_job = serializers.IntegerField(allow_null=True)
    used_by = serializers.ListField(child=serializers.DictField())


# Viewer -------------------------------------------------------------------------------


class ViewerFileQuerySerializer(Serializer):
    file = serializers.CharField(required=False, max_length=200, help_text="Default: first file")
    split = serializers.CharField(required=False, max_length=64)


class ViewerPageQuerySerializer(ViewerFileQuerySerializer):
    offset = serializers.IntegerField(min_value=0, max_value=MAX_INT, default=0)
    length = serializers.IntegerField(min_value=1, max_value=100, default=100)


class ViewerSearchQuerySerializer(ViewerPageQuerySerializer):
    query = serializers.CharField(max_length=200, trim_whitespace=False)


class ViewerFilterQuerySerializer(ViewerPageQuerySerializer):
    where = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    orderby = serializers.CharField(required=False, allow_blank=True, max_length=200)


class SplitSerializer(Serializer):
    dataset = serializers.CharField()
    config = serializers.CharField()
    split = serializers.CharField()
    file = serializers.CharField()
    num_rows = serializers.IntegerField(allow_null=True)


class SplitsSerializer(Serializer):
    splits = SplitSerializer(many=True)


class ViewerPageSerializer(Serializer):
    """Hugging Face's dataset viewer page: features, rows, totals."""

    features = serializers.ListField(child=serializers.DictField())
    rows = serializers.ListField(child=serializers.DictField())
    num_rows_total = serializers.IntegerField()
    num_rows_per_page = serializers.IntegerField()
    partial = serializers.BooleanField()  # type: ignore[assignment]


class ViewerStatisticsSerializer(Serializer):
    file = serializers.CharField()
    split = serializers.CharField()
    columns = serializers.JSONField(help_text="The viewer's per-column statistics")
    version_stats = serializers.JSONField(
        allow_null=True, help_text="This file's entry of the version's statistics job"
    )


# Jobs ---------------------------------------------------------------------------------


class DatasetJobSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    dataset = serializers.CharField(source="repo.full_name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    output_version = serializers.SerializerMethodField()
    result = serializers.JSONField(read_only=True)
    params = serializers.JSONField(read_only=True)

    class Meta:
        model = DatasetJob
        fields = [
            "id",
            "kind",
            "dataset",
            "version",
            "output_version",
            "status",
            "progress",
            "error",
            "result",
            "params",
            "attempts",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_output_version(self, job: DatasetJob) -> int | None:
        return job.output.number if job.output is not None else None


class JobEventSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    data = serializers.SerializerMethodField()  # type: ignore[assignment]

    class Meta:
        model = DatasetJobEvent
        fields = ["id", "created_at", "level", "message", "old_status", "new_status", "data"]
        read_only_fields = fields

    def get_data(self, event: DatasetJobEvent) -> dict[str, Any]:
        """A crash's traceback is for the platform's staff, not the job's owner."""
        data = dict(event.data or {})
        if not self.context.get("staff"):
            data.pop("traceback", None)
        return data


class JobEventQuerySerializer(Serializer):
    after = serializers.IntegerField(
        required=False, min_value=0, max_value=2**62, help_text="Events after this id"
    )


class ProcessSerializer(Serializer):
    steps = serializers.ListField(
        child=serializers.DictField(),
        allow_empty=False,
        max_length=50,
        help_text='e.g. [{"step": "dedup_exact"}, {"step": "filter_length", "min_chars": 10}]',
    )


class StatisticsRequestSerializer(Serializer):
    tokenizer = serializers.RegexField(
        MODEL_NAME_RE,
        required=False,
        allow_blank=True,
        help_text="A model's namespace/name whose tokenizer counts tokens; empty: none",
    )
