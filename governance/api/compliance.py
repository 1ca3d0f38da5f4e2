"""Compliance reports API (``/api/governance/compliance-reports/``): create one for a
served model, follow it, read its checks, export it as Markdown or Word. Tenancy is the
reports' owner (``restrict()``); another tenant's report is a 404."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import URLPattern, path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import permissions, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.services.catalog import owner_named
from governance.models import ComplianceReport, ReportStatus
from governance.services import compliance
from portal.api.base import OwnedViewSet
from portal.auth import acting_user
from portal.errors import NotFound

REPORT_PATH = [OpenApiParameter("report_id", str, OpenApiParameter.PATH, description="Report id")]
CONTENT_TYPES = {
    "md": "text/markdown; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class CheckSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.CharField(help_text="Clause and item, e.g. 9.4-refuse-rate")
    title = serializers.CharField()
    value = serializers.JSONField(allow_null=True)
    threshold = serializers.JSONField(allow_null=True)
    passed = serializers.BooleanField(allow_null=True, help_text="null: not automated")
    detail = serializers.CharField(allow_blank=True)


class ComplianceReportSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    checks = CheckSerializer(many=True, read_only=True)
    runs = serializers.JSONField(
        read_only=True, help_text="[{dataset, samples, run_id, suite}]: the sampling run"
    )

    class Meta:
        model = ComplianceReport
        fields = [
            "report_id",
            "namespace",
            "served_name",
            "status",
            "passed",
            "checks",
            "runs",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class ReportCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    served_name = serializers.CharField(max_length=300, help_text="The deployment's model name")
    owner = serializers.CharField(
        required=False, max_length=64, help_text="The user or organisation to own it (you)."
    )
    samples = serializers.DictField(
        child=serializers.IntegerField(min_value=1, max_value=5000),
        required=False,
        help_text="Questions per assessment: should_refuse, non_refusal, generated "
        "(default 300, 300, 1000; fewer fails the sample-size checks)",
    )
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=4096)


class ReportQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.ChoiceField(choices=ReportStatus.choices, required=False)
    served_name = serializers.CharField(required=False, max_length=300)


class ExportQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    format = serializers.ChoiceField(choices=compliance.FORMATS, default="md")


class FirstRenderer(DefaultContentNegotiation):
    """JSON always: ``?format=`` names the export's file type here, not a renderer."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        first = next(iter(renderers))
        return first, first.media_type


@extend_schema_view(
    list=extend_schema(parameters=[ReportQuerySerializer]),
    create=extend_schema(
        request=ReportCreateSerializer, responses={202: ComplianceReportSerializer}
    ),
    retrieve=extend_schema(parameters=REPORT_PATH),
)
class ComplianceReportViewSet(OwnedViewSet):
    """A deployment's compliance check against TC260-003 (library minimums and the
    sampling assessments, run through the evaluation sub-platform)."""

    queryset = ComplianceReport.objects.all()
    serializer_class = ComplianceReportSerializer
    permission_classes = [permissions.IsAuthenticated]
    content_negotiation_class = FirstRenderer

    def get_object(self) -> ComplianceReport:
        found = self.get_queryset().filter(report_id=str(self.kwargs["report_id"])[:40]).first()
        if found is None:
            raise NotFound("No such compliance report.", param="report_id")
        return found

    def list(self, request: Request) -> Response:
        query = ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        given = query.validated_data
        rows: QuerySet[ComplianceReport] = self.get_queryset()
        if given.get("status"):
            rows = rows.filter(status=given["status"])
        if given.get("served_name"):
            rows = rows.filter(served_name=given["served_name"])
        page = self.paginate_queryset(rows.order_by("-created_at", "-id"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        """Check a served model: library checks at once, sampling runs in the background."""
        data = ReportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        user = acting_user(request)
        report = compliance.create_report(
            user,
            owner_named(user, given.get("owner")),
            given["served_name"],
            samples=given.get("samples"),
            max_tokens=given.get("max_tokens"),
        )
        return Response(self.get_serializer(report).data, status=status.HTTP_202_ACCEPTED)

    def retrieve(self, request: Request, report_id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        parameters=[*REPORT_PATH, ExportQuerySerializer],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def export(self, request: Request, report_id: str) -> HttpResponse:
        """The report as a document (``?format=md|docx``), as an attachment."""
        report = self.get_object()
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt = query.validated_data["format"]
        response = HttpResponse(compliance.render(report, fmt), content_type=CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="{report.report_id}.{fmt}"'
        return response


urlpatterns: list[URLPattern] = [
    path(
        "compliance-reports/",
        ComplianceReportViewSet.as_view({"get": "list", "post": "create"}),
        name="governance-compliance-list",
    ),
    path(
        "compliance-reports/<str:report_id>/",
        ComplianceReportViewSet.as_view({"get": "retrieve"}),
        name="governance-compliance-detail",
    ),
    path(
        "compliance-reports/<str:report_id>/export",
        ComplianceReportViewSet.as_view({"get": "export"}),
        name="governance-compliance-export",
    ),
]
