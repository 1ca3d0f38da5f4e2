"""``/api/usage/`` (one row per request) and ``/api/usage/hourly/`` (rollups).

Both are scoped by :meth:`UsageQuerySet.restrict` through ``OwnedViewSet``, filtered by
model, key, organisation and a time range, paginated with totals, and exported as CSV
(``?format=csv`` or ``Accept: text/csv``), streamed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, DecimalField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import mixins, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from compute.metering.models import UsageHourly, UsageRecord
from portal.api.base import OwnedViewSet

CSV_CHUNK = 1000


class UsageRecordSerializer(serializers.ModelSerializer[UsageRecord]):
    key_prefix = serializers.CharField(source="key.prefix", default=None, read_only=True)
    username = serializers.CharField(source="user.username", default=None, read_only=True)
    org_name = serializers.CharField(source="org.name", default=None, read_only=True)

    class Meta:
        model = UsageRecord
        fields = [
            "request_id",
            "time",
            "model",
            "model_version",
            "key",
            "key_prefix",
            "user",
            "username",
            "org",
            "org_name",
            "replica",
            "node",
            "endpoint",
            "stream",
            "status",
            "error_code",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "ttft_ms",
            "cost_cny",
        ]
        read_only_fields = fields


class UsageHourlySerializer(serializers.ModelSerializer[UsageHourly]):
    key_prefix = serializers.CharField(source="key.prefix", default=None, read_only=True)
    username = serializers.CharField(source="user.username", default=None, read_only=True)
    org_name = serializers.CharField(source="org.name", default=None, read_only=True)

    class Meta:
        model = UsageHourly
        fields = [
            "hour",
            "model",
            "key",
            "key_prefix",
            "user",
            "username",
            "org",
            "org_name",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cost_cny",
        ]
        read_only_fields = fields


# Built with type(): DRF pops declared fields off the class, so "errors" does not shadow
# Serializer.errors at run time, but a class body would look like it does.
UsageTotalsSerializer: type[serializers.Serializer[Any]] = type(
    "UsageTotals",
    (serializers.Serializer,),
    {
        "requests": serializers.IntegerField(),
        "errors": serializers.IntegerField(),
        "prompt_tokens": serializers.IntegerField(),
        "completion_tokens": serializers.IntegerField(),
        "cost_cny": serializers.DecimalField(max_digits=24, decimal_places=10),
    },
)


def _page_serializer(name: str, item: type[serializers.Serializer[Any]]) -> type[Any]:
    fields = {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item(many=True),
        "totals": UsageTotalsSerializer(),
    }
    page = type(name, (serializers.Serializer,), fields)
    return extend_schema_serializer(many=False)(page)


UsageRecordPage = _page_serializer("PaginatedUsageRecordList", UsageRecordSerializer)
UsageHourlyPage = _page_serializer("PaginatedUsageHourlyList", UsageHourlySerializer)


class CSVRenderer(BaseRenderer):
    """Selects CSV in content negotiation; the view streams the body itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        return b""


FILTER_PARAMETERS = [
    OpenApiParameter("model", str, description="Served model name"),
    OpenApiParameter("key", int, description="API key id"),
    OpenApiParameter("org", str, description="Organisation name"),
    OpenApiParameter("from", str, description="From this ISO date or date-time (inclusive)"),
    OpenApiParameter(
        "to", str, description="To this ISO date (inclusive) or date-time (exclusive)"
    ),
    OpenApiParameter("format", str, enum=["json", "csv"], description="csv: stream a CSV file"),
]


def _instant(name: str, text: str, *, end: bool) -> datetime:
    """An ISO date-time, or a date (its start; with ``end``, the next day's start)."""
    try:
        day = parse_date(text) if len(text) == 10 else None
        if day is not None:
            moment: datetime | None = datetime.combine(
                day + timedelta(days=1) if end else day, time()
            )
        else:
            moment = parse_datetime(text)
        if moment is not None and timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        if moment is not None:
            moment.astimezone(UTC)
            return moment
    except (ValueError, OverflowError):
        pass
    raise ValidationError({name: "Use an ISO date (2026-11-23) or date-time."})


def _text(params: Any, name: str) -> str:
    value = str(params.get(name) or "")
    if "\x00" in value or len(value) > 200:
        raise ValidationError({name: "Not a valid value."})
    return value


def usage_filter(params: Any, time_field: str) -> Q:
    """The query parameters as one filter; ValidationError (400) for bad values."""
    condition = Q()
    if model := _text(params, "model"):
        condition &= Q(model=model)
    if key := _text(params, "key"):
        if not re.fullmatch(r"[0-9]{1,18}", key):
            raise ValidationError({"key": "An API key id (an integer)."})
        condition &= Q(key_id=int(key))
    if org := _text(params, "org"):
        condition &= Q(org__name=org)
    if params.get("from"):
        condition &= Q(**{f"{time_field}__gte": _instant("from", params["from"], end=False)})
    if params.get("to"):
        condition &= Q(**{f"{time_field}__lt": _instant("to", params["to"], end=True)})
    return condition


def totals(queryset: QuerySet[Any], count_field: str | None) -> dict[str, Any]:
    """Requests, errors, tokens and cost summed over ``queryset``."""
    zero = Value(Decimal(0), output_field=DecimalField(max_digits=24, decimal_places=10))
    if count_field is None:
        requests: Any = Count("id")
        errors: Any = Count("id", filter=Q(status__gte=400))
    else:
        requests, errors = Sum("requests"), Sum("errors")
    sums = queryset.order_by().aggregate(
        requests=Coalesce(requests, 0),
        errors=Coalesce(errors, 0),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        cost_cny=Coalesce(Sum("cost_cny"), zero),
    )
    return sums


class _UsageViewSet(mixins.ListModelMixin, OwnedViewSet):
    renderer_classes = [JSONRenderer, CSVRenderer]
    time_field = "time"
    count_field: str | None = None
    csv_name = "usage"

    def get_queryset(self) -> QuerySet[Any]:
        scoped = super().get_queryset().select_related("key", "user", "org")
        return scoped.filter(usage_filter(self.request.query_params, self.time_field))

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        queryset = self.get_queryset()
        if request.accepted_renderer.format == "csv":
            return self.stream_csv(queryset)
        page = self.paginate_queryset(queryset)
        response = self.get_paginated_response(self.get_serializer(page, many=True).data)
        response.data["totals"] = UsageTotalsSerializer(totals(queryset, self.count_field)).data
        return response

    def stream_csv(self, queryset: QuerySet[Any]) -> StreamingHttpResponse:
        fields = list(self.get_serializer_class().Meta.fields)  # type: ignore[attr-defined]
        response = StreamingHttpResponse(
            _csv_rows(fields, queryset, self.get_serializer_class()),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{self.csv_name}.csv"'
        return response

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are answered in DRF's JSON shape, whatever format was asked for.
        if getattr(self.request, "accepted_renderer", None) is not None:
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_rows(
    fields: list[str], queryset: QuerySet[Any], serializer: type[serializers.BaseSerializer[Any]]
) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(fields)
    for row in queryset.iterator(chunk_size=CSV_CHUNK):
        data = serializer(row).data
        yield writer.writerow(["" if data[f] is None else data[f] for f in fields])


@extend_schema(parameters=FILTER_PARAMETERS)
class UsageRecordViewSet(_UsageViewSet):
    """Your inference requests, one row each (admins: everyone's)."""

    queryset = UsageRecord.objects.all()
    serializer_class = UsageRecordSerializer

    @extend_schema(
        responses={(200, "application/json"): UsageRecordPage, (200, "text/csv"): OpenApiTypes.STR}
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return super().list(request, *args, **kwargs)


@extend_schema(parameters=FILTER_PARAMETERS)
class UsageHourlyViewSet(_UsageViewSet):
    """Your usage per hour, key, organisation and model (admins: everyone's)."""

    queryset = UsageHourly.objects.all()
    serializer_class = UsageHourlySerializer
    time_field = "hour"
    count_field = "requests"
    csv_name = "usage-hourly"

    @extend_schema(
        responses={(200, "application/json"): UsageHourlyPage, (200, "text/csv"): OpenApiTypes.STR}
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return super().list(request, *args, **kwargs)
