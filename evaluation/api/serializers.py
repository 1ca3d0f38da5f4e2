"""Shapes of the evaluation API: what goes in (checked here, acted on by services) and
what comes out (tasks, suites, endpoints without their key, runs, samples, events)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from evaluation.models import (
    Endpoint,
    EvalRun,
    EvalRunEvent,
    EvalSample,
    EvalSuite,
    EvalTask,
    RunSource,
)
from portal.models import Visibility
from portal.models.jobs import JobStatus

OWNER_HELP = "The user or organisation to own it (default: you)."
MAX_SOURCE = 256 * 1024


class Serializer(serializers.Serializer):  # type: ignore[type-arg]
    pass


def ref(item: Any) -> str | None:
    return f"{item.namespace}/{item.name}" if item is not None else None


# --- tasks and suites -----------------------------------------------------------------


class EvalTaskSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.SerializerMethodField(help_text="namespace/name")

    class Meta:
        model = EvalTask
        fields = [
            "id",
            "namespace",
            "name",
            "visibility",
            "description",
            "output_type",
            "tags",
            "builtin",
            "source",
            "spec",
            "spec_sha256",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_id(self, task: EvalTask) -> str:
        return f"{task.namespace}/{task.name}"


class SuiteMemberSerializer(Serializer):
    task = serializers.CharField(help_text="namespace/name")
    weight = serializers.FloatField()


class EvalSuiteSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.SerializerMethodField(help_text="namespace/name")
    tasks = serializers.SerializerMethodField()

    class Meta:
        model = EvalSuite
        fields = [
            "id",
            "namespace",
            "name",
            "visibility",
            "description",
            "aggregation",
            "ahp",
            "builtin",
            "source",
            "tasks",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_id(self, suite: EvalSuite) -> str:
        return f"{suite.namespace}/{suite.name}"

    @extend_schema_field(SuiteMemberSerializer(many=True))
    def get_tasks(self, suite: EvalSuite) -> list[dict[str, Any]]:
        members = suite.members.select_related("task").order_by("position", "pk")
        return [{"task": ref(m.task), "weight": m.weight} for m in members]


class CatalogCreateSerializer(Serializer):
    yaml = serializers.CharField(
        max_length=MAX_SOURCE, trim_whitespace=False, help_text="The YAML document"
    )
    owner = serializers.CharField(required=False, max_length=64, help_text=OWNER_HELP)
    visibility = serializers.ChoiceField(
        choices=Visibility.choices, default=Visibility.PRIVATE, required=False
    )


class CatalogUpdateSerializer(Serializer):
    yaml = serializers.CharField(max_length=MAX_SOURCE, trim_whitespace=False, required=False)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)


class CatalogQuerySerializer(Serializer):
    search = serializers.CharField(required=False, max_length=100)
    owner = serializers.CharField(required=False, max_length=64)
    builtin = serializers.BooleanField(required=False, allow_null=True, default=None)


# --- endpoints ------------------------------------------------------------------------


class EndpointSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.SerializerMethodField(help_text="namespace/name")
    has_key = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "namespace",
            "name",
            "visibility",
            "base_url",
            "model",
            "key_hint",
            "has_key",
            "created_at",
        ]
        read_only_fields = fields

    def get_id(self, endpoint: Endpoint) -> str:
        return f"{endpoint.namespace}/{endpoint.name}"

    def get_has_key(self, endpoint: Endpoint) -> bool:
        return bool(endpoint.api_key_encrypted)


class EndpointCreateSerializer(Serializer):
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
    base_url = serializers.CharField(max_length=500, help_text="e.g. https://api.example.com/v1")
    model = serializers.CharField(max_length=200, help_text="The model name it expects")
    api_key = serializers.CharField(
        max_length=500, required=False, allow_blank=True, write_only=True
    )
    owner = serializers.CharField(required=False, max_length=64, help_text=OWNER_HELP)
    visibility = serializers.ChoiceField(
        choices=[Visibility.PRIVATE, Visibility.ORG], default=Visibility.PRIVATE, required=False
    )


class EndpointUpdateSerializer(Serializer):
    base_url = serializers.CharField(max_length=500, required=False)
    model = serializers.CharField(max_length=200, required=False)
    api_key = serializers.CharField(
        max_length=500, required=False, allow_blank=True, write_only=True
    )


# --- runs -----------------------------------------------------------------------------


class EvalRunSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    suite = serializers.SerializerMethodField(help_text="namespace/name")
    task = serializers.SerializerMethodField(help_text="namespace/name")
    endpoint = serializers.SerializerMethodField(help_text="namespace/name")
    model = serializers.CharField(source="model_name", read_only=True)
    model_version = serializers.SerializerMethodField()
    score = serializers.SerializerMethodField(help_text="The suite's aggregate score")

    class Meta:
        model = EvalRun
        fields = [
            "id",
            "namespace",
            "visibility",
            "status",
            "progress",
            "error",
            "error_code",
            "suite",
            "task",
            "model",
            "model_version",
            "endpoint",
            "params",
            "source",
            "fine_tuning_job_id",
            "total_samples",
            "done_samples",
            "score",
            "scores",
            "record",
            "attempts",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_suite(self, run: EvalRun) -> str | None:
        return ref(run.suite)

    def get_task(self, run: EvalRun) -> str | None:
        return ref(run.task)

    def get_endpoint(self, run: EvalRun) -> str | None:
        return ref(run.endpoint)

    def get_model_version(self, run: EvalRun) -> str | None:
        return str(run.model_version) if run.model_version is not None else None

    def get_score(self, run: EvalRun) -> float | None:
        suite = (run.scores or {}).get("suite") or {}
        value = suite.get("score")
        return float(value) if isinstance(value, int | float) else None


class RunCreateSerializer(Serializer):
    suite = serializers.CharField(required=False, max_length=200, help_text="namespace/name")
    task = serializers.CharField(required=False, max_length=200, help_text="namespace/name")
    model = serializers.CharField(
        required=False, max_length=300, help_text="A served model (through the gateway)"
    )
    endpoint = serializers.CharField(
        required=False, max_length=200, help_text="An endpoint namespace/name"
    )
    params = serializers.JSONField(
        required=False,
        help_text="limit, temperature, max_tokens, concurrency, batch_size, seed",
    )
    owner = serializers.CharField(required=False, max_length=64, help_text=OWNER_HELP)
    visibility = serializers.ChoiceField(
        choices=Visibility.choices, default=Visibility.PRIVATE, required=False
    )


class RunQuerySerializer(Serializer):
    status = serializers.ChoiceField(choices=JobStatus.choices, required=False)
    suite = serializers.CharField(required=False, max_length=200)
    model = serializers.CharField(required=False, max_length=300)
    origin = serializers.ChoiceField(
        choices=RunSource.choices, required=False, help_text="Who started it (run source)"
    )


class SampleQuerySerializer(Serializer):
    task = serializers.CharField(required=False, max_length=200, help_text="namespace/name")
    failed = serializers.BooleanField(
        required=False, default=False, help_text="Only the samples that failed"
    )


class EvalSampleSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    task = serializers.SerializerMethodField(help_text="namespace/name")
    target = serializers.JSONField(read_only=True)
    output = serializers.JSONField(read_only=True)

    class Meta:
        model = EvalSample
        fields = [
            "task",
            "doc_index",
            "prompt",
            "target",
            "output",
            "extracted",
            "metrics",
            "error",
        ]
        read_only_fields = fields

    def get_task(self, sample: EvalSample) -> str | None:
        return ref(sample.task)


class EvalRunEventSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = EvalRunEvent
        fields = ["id", "created_at", "level", "message", "old_status", "new_status", "data"]
        read_only_fields = fields
