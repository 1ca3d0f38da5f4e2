"""The review queue, reports, appeals, moderation decisions and the audit log API
(``/api/governance/``). Tenancy is :mod:`governance.services.scope` (another tenant's
id is a 404, absent from lists); the verbs are :mod:`governance.services.review`. An API
key needs the ``moderation`` scope."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.urls import path, re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from governance.api import serializers_review as s
from governance.api.files import CSVRenderer, JSONErrors, JSONLinesRenderer
from governance.models import Appeal, AuditEvent, ModerationDecision, ReviewItem
from governance.services import audit, review, scope
from portal.api.v1 import KeyScope
from portal.auth import acting_user
from portal.errors import NotFound, PermissionDenied, PlatformError

EXPORT_CHUNK = 1000
ITEM_PATH = [OpenApiParameter("item_id", str, OpenApiParameter.PATH, description="review-…")]
APPEAL_PATH = [OpenApiParameter("appeal_id", str, OpenApiParameter.PATH, description="appeal-…")]
DECISION_PATH = [OpenApiParameter("decision_id", str, OpenApiParameter.PATH)]
AUDIT_PATH = [OpenApiParameter("id", int, OpenApiParameter.PATH, description="Entry id")]


class GovernanceViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Signed-in users; an API key needs ``moderation`` (``moderation:read`` to read)."""

    permission_classes = [permissions.IsAuthenticated, KeyScope]
    scope = "moderation"

    def page(self, rows: QuerySet[Any], serializer: type[Any] | None = None) -> Response:
        found = self.paginate_queryset(rows)
        make = serializer or self.get_serializer_class()
        return self.get_paginated_response(make(found, many=True).data)

    def validated(self, serializer: type[Any], data: Any) -> dict[str, Any]:
        given = serializer(data=data)
        given.is_valid(raise_exception=True)
        return dict(given.validated_data)


def _one(rows: QuerySet[Any], field: str, value: str, what: str) -> Any:
    found = rows.filter(**{field: str(value)[:64]}).first()
    if found is None:
        raise NotFound(f"No such {what}.", param=field)
    return found


# --- the queue ------------------------------------------------------------------------


class ReviewItemViewSet(GovernanceViewSet):
    """The review queue of the items you may review (staff: all; org owners and admins:
    their organisations')."""

    serializer_class = s.ReviewItemSerializer

    def get_queryset(self) -> QuerySet[ReviewItem]:
        related = ("owner_org", "subject_user", "assigned_to", "decided_by", "decision")
        return scope.visible_items(self.request.user).select_related(*related)

    def get_object(self) -> ReviewItem:
        return _one(self.get_queryset(), "item_id", self.kwargs["item_id"], "review item")

    @extend_schema(parameters=[s.ReviewQuerySerializer])
    def list(self, request: Request) -> Response:
        given = self.validated(s.ReviewQuerySerializer, request.query_params)
        rows = self.get_queryset()
        if given.get("status"):
            rows = rows.filter(status=given["status"])
        if given.get("source"):
            rows = rows.filter(source=given["source"])
        if given.get("overdue") is not None:
            late = review.overdue_q()
            rows = rows.filter(late) if given["overdue"] else rows.exclude(late)
        if given.get("assigned_to_me") is not None:
            mine = {"assigned_to": request.user}
            rows = rows.filter(**mine) if given["assigned_to_me"] else rows.exclude(**mine)
        return self.page(rows.order_by("due_at", "pk"))

    @extend_schema(parameters=ITEM_PATH)
    def retrieve(self, request: Request, item_id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(parameters=ITEM_PATH, request=s.AssignSerializer)
    @action(detail=True, methods=["post"])
    def assign(self, request: Request, item_id: str) -> Response:
        """Assign the item to a reviewer (yourself when no assignee is named)."""
        item = self.get_object()
        given = self.validated(s.AssignSerializer, request.data)
        user = acting_user(request)
        assignee: Any = user
        if "assignee" in given:
            assignee = _user_named(given["assignee"]) if given["assignee"] is not None else None
        item = review.assign(user, item, assignee)
        return Response(self.get_serializer(self.get_queryset().get(pk=item.pk)).data)

    @extend_schema(parameters=ITEM_PATH, request=s.DecideSerializer)
    @action(detail=True, methods=["post"])
    def decide(self, request: Request, item_id: str) -> Response:
        """Approve, remove, escalate, or adjust a lexicon (and resolve the item)."""
        item = self.get_object()
        given = self.validated(s.DecideSerializer, request.data)
        lexicon = dict(given["lexicon"]) if given.get("lexicon") else None
        item = review.decide(acting_user(request), item, given["decision"], given["notes"], lexicon)
        return Response(self.get_serializer(self.get_queryset().get(pk=item.pk)).data)


def _user_named(username: str) -> Any:
    found = get_user_model().objects.filter(username=username, is_active=True).first()
    if found is None:
        raise PlatformError("No such user.", param="assignee")
    return found


# --- reports, my reviews, appeals -----------------------------------------------------


class ReportViewSet(GovernanceViewSet):
    """Report a generated answer (the playground's "report this answer")."""

    serializer_class = s.MyReviewSerializer

    @extend_schema(request=s.ReportSerializer, responses={201: s.MyReviewSerializer})
    def create(self, request: Request) -> Response:
        given = self.validated(s.ReportSerializer, request.data)
        item = review.report(acting_user(request), **given)
        return Response(self.get_serializer(item).data, status=status.HTTP_201_CREATED)


class MyReviewViewSet(GovernanceViewSet):
    """The review items about your own requests and reports, newest first."""

    serializer_class = s.MyReviewSerializer

    def list(self, request: Request) -> Response:
        return self.page(scope.my_items(request.user).order_by("-created_at", "-pk"))


class ItemAppealViewSet(GovernanceViewSet):
    """Appeals of one review item: its subject appeals and sees theirs; its reviewers
    see them all."""

    serializer_class = s.AppealSerializer

    def item(self) -> ReviewItem:
        user = self.request.user
        rows = scope.visible_items(user) | scope.my_items(user)
        return _one(rows.distinct(), "item_id", self.kwargs["item_id"], "review item")

    @extend_schema(parameters=ITEM_PATH)
    def list(self, request: Request, item_id: str) -> Response:
        item = self.item()
        rows = item.appeals.select_related("item", "user", "decided_by")
        if not scope.can_review(request.user, item):
            rows = rows.filter(user_id=acting_user(request).pk)
        return self.page(rows.order_by("-created_at", "-pk"))

    @extend_schema(
        parameters=ITEM_PATH,
        request=s.AppealCreateSerializer,
        responses={201: s.AppealSerializer},
    )
    def create(self, request: Request, item_id: str) -> Response:
        """Appeal the removal of your item (one open appeal at a time)."""
        given = self.validated(s.AppealCreateSerializer, request.data)
        made = review.appeal(acting_user(request), self.item(), given["reason"])
        return Response(self.get_serializer(made).data, status=status.HTTP_201_CREATED)


class AppealViewSet(GovernanceViewSet):
    """Appeals of the items you may review; decide them."""

    serializer_class = s.AppealSerializer

    def get_queryset(self) -> QuerySet[Appeal]:
        related = ("item", "user", "decided_by")
        return scope.visible_appeals(self.request.user).select_related(*related)

    @extend_schema(parameters=[s.AppealQuerySerializer])
    def list(self, request: Request) -> Response:
        given = self.validated(s.AppealQuerySerializer, request.query_params)
        rows = self.get_queryset()
        if given.get("status"):
            rows = rows.filter(status=given["status"])
        return self.page(rows.order_by("-created_at", "-pk"))

    @extend_schema(parameters=APPEAL_PATH, request=s.AppealDecideSerializer)
    @action(detail=True, methods=["post"])
    def decide(self, request: Request, appeal_id: str) -> Response:
        """Uphold the removal, or overturn it (the item becomes approved)."""
        found = _one(self.get_queryset(), "appeal_id", appeal_id, "appeal")
        given = self.validated(s.AppealDecideSerializer, request.data)
        found = review.decide_appeal(
            acting_user(request), found, given["upheld"], given["response"]
        )
        return Response(self.get_serializer(found).data)


# --- decisions ------------------------------------------------------------------------


class DecisionViewSet(GovernanceViewSet):
    """Moderation decisions on your organisations' traffic (staff: all), newest first."""

    serializer_class = s.DecisionSerializer

    def get_queryset(self) -> QuerySet[ModerationDecision]:
        return scope.visible_decisions(self.request.user).select_related("user", "org", "api_key")

    @extend_schema(parameters=[s.DecisionQuerySerializer])
    def list(self, request: Request) -> Response:
        given = self.validated(s.DecisionQuerySerializer, request.query_params)
        rows = self.get_queryset()
        for name in ("action", "direction", "source", "served_name"):
            if given.get(name):
                rows = rows.filter(**{name: given[name]})
        if given.get("since"):
            rows = rows.filter(ts__gte=given["since"])
        if given.get("until"):
            rows = rows.filter(ts__lt=given["until"])
        return self.page(rows.order_by("-ts", "-pk"))

    @extend_schema(parameters=DECISION_PATH)
    def retrieve(self, request: Request, decision_id: str) -> Response:
        found = _one(self.get_queryset(), "decision_id", decision_id, "decision")
        return Response(self.get_serializer(found).data)


# --- the audit log --------------------------------------------------------------------


EXPORT_RENDERERS = [JSONRenderer, CSVRenderer, JSONLinesRenderer]


class AuditViewSet(JSONErrors, GovernanceViewSet):
    """The append-only audit log: staff see every entry, organisation owners and admins
    their organisations'. ``?format=csv|jsonl`` streams the filtered log, oldest first."""

    serializer_class = s.AuditEventSerializer
    renderer_classes = [JSONRenderer]  # the list's route adds the export formats

    def get_queryset(self) -> QuerySet[AuditEvent]:
        return scope.visible_audit(self.request.user).select_related("org")

    def filtered(self, given: dict[str, Any]) -> QuerySet[AuditEvent]:
        rows = self.get_queryset()
        if found := given.get("action"):
            rows = (
                rows.filter(action__startswith=found)
                if found.endswith(".")
                else rows.filter(action=found)
            )
        if given.get("actor"):
            rows = rows.filter(actor_name=given["actor"])
        if found := given.get("target"):
            kind, _, ident = found.rpartition(":")
            rows = (
                rows.filter(target_id=ident)
                if not kind
                else rows.filter(target_type=kind, target_id=ident)
            )
        if given.get("org"):
            rows = rows.filter(org__name=given["org"])
        if given.get("since"):
            rows = rows.filter(ts__gte=given["since"])
        if given.get("until"):
            rows = rows.filter(ts__lt=given["until"])
        return rows

    @extend_schema(
        parameters=[s.AuditQuerySerializer],
        responses={
            (200, "application/json"): s.AuditEventSerializer(many=True),
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
        },
    )
    def list(self, request: Request) -> Any:
        given = self.validated(s.AuditQuerySerializer, request.query_params)
        rows = self.filtered(given)
        fmt = request.accepted_renderer.format
        if fmt in ("csv", "jsonl"):
            return _download(request, rows, fmt)
        return self.page(rows.order_by("-id"))

    @extend_schema(parameters=AUDIT_PATH)
    def retrieve(self, request: Request, id: str) -> Response:
        if not str(id).isdigit() or len(str(id)) > 18:
            raise NotFound("No such audit entry.", param="id")
        return Response(
            self.get_serializer(_one(self.get_queryset(), "pk", id, "audit entry")).data
        )

    @extend_schema(responses=s.ChainCheckSerializer)
    @action(detail=False, methods=["get"])
    def verify(self, request: Request) -> Response:
        """Re-compute the whole hash chain: whether any entry was changed or removed."""
        user = request.user
        if not scope.is_reviewer(user):
            raise PermissionDenied("Only staff and organisation admins read the audit log.")
        check = audit.verify_chain()
        staff = scope.is_staff(user)
        visible = check.broken_at is not None and (
            staff or self.get_queryset().filter(pk=check.broken_at).exists()
        )
        body = {
            "ok": check.ok,
            "checked": check.checked if staff else None,
            "broken_at": check.broken_at if visible else None,
            "reason": check.reason,
        }
        return Response(s.ChainCheckSerializer(body).data)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _download(request: Request, rows: QuerySet[AuditEvent], fmt: str) -> StreamingHttpResponse:
    lines = _export_lines(rows, fmt)
    # Under ASGI a synchronous iterator would be read whole into memory before sending.
    asgi = isinstance(request._request, ASGIRequest)
    body: Iterator[str] | AsyncIterator[str] = _async_lines(lines) if asgi else lines
    content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-log.{fmt}"'
    return response


def _export_lines(rows: QuerySet[AuditEvent], fmt: str) -> Iterator[str]:
    """The log as CSV (with a header) or JSON Lines, oldest first, one string per page
    of rows read by id (no cursor is held open between pages)."""
    writer = csv.writer(_Echo())
    if fmt == "csv":
        yield writer.writerow(audit.EXPORT_COLUMNS)
    last = 0
    while page := list(rows.filter(id__gt=last).order_by("id")[:EXPORT_CHUNK]):
        lines = audit.export_rows(page)
        if fmt == "csv":
            yield "".join(writer.writerow(row.values()) for row in lines)
        else:
            yield "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in lines)
        last = page[-1].pk


def _next_line(lines: Iterator[str]) -> str | None:
    return next(lines, None)


async def _async_lines(lines: Iterator[str]) -> AsyncIterator[str]:
    # Thread-sensitive: every page is read on the request's own thread and connection.
    step = sync_to_async(_next_line)
    while (line := await step(lines)) is not None:
        yield line


ITEM = r"^review/(?P<item_id>[A-Za-z0-9-]{1,40})/"
APPEAL = r"^appeals/(?P<appeal_id>[A-Za-z0-9-]{1,40})/"

urlpatterns = [
    path("review/", ReviewItemViewSet.as_view({"get": "list"}), name="gov-review-list"),
    re_path(ITEM + "$", ReviewItemViewSet.as_view({"get": "retrieve"}), name="gov-review-detail"),
    re_path(
        ITEM + "assign/$", ReviewItemViewSet.as_view({"post": "assign"}), name="gov-review-assign"
    ),
    re_path(
        ITEM + "decide/$", ReviewItemViewSet.as_view({"post": "decide"}), name="gov-review-decide"
    ),
    re_path(
        ITEM + "appeals/$",
        ItemAppealViewSet.as_view({"get": "list", "post": "create"}),
        name="gov-review-appeals",
    ),
    path("reports/", ReportViewSet.as_view({"post": "create"}), name="gov-report-create"),
    path("my-reviews/", MyReviewViewSet.as_view({"get": "list"}), name="gov-my-reviews"),
    path("appeals/", AppealViewSet.as_view({"get": "list"}), name="gov-appeal-list"),
    re_path(
        APPEAL + "decide/$", AppealViewSet.as_view({"post": "decide"}), name="gov-appeal-decide"
    ),
    path("decisions/", DecisionViewSet.as_view({"get": "list"}), name="gov-decision-list"),
    re_path(
        r"^decisions/(?P<decision_id>[A-Za-z0-9_.:-]{1,64})/$",
        DecisionViewSet.as_view({"get": "retrieve"}),
        name="gov-decision-detail",
    ),
    path(
        "audit/",
        AuditViewSet.as_view({"get": "list"}, renderer_classes=EXPORT_RENDERERS),
        name="gov-audit-list",
    ),
    path("audit/verify/", AuditViewSet.as_view({"get": "verify"}), name="gov-audit-verify"),
    re_path(
        r"^audit/(?P<id>[0-9]{1,18})/$",
        AuditViewSet.as_view({"get": "retrieve"}),
        name="gov-audit-detail",
    ),
]
