"""``/api/governance/``: moderation policies, versioned lists (lexicons, allow-lists,
question banks) and suspensions. Thin views over :mod:`governance.services.policies`,
:mod:`governance.services.lists` and :mod:`governance.services.suspensions`.

Tenancy: policies and lists through the services' ``visible_*`` filters (``restrict()``,
staff also the platform's rows), suspensions through ``suspensions.visible``; an id the
caller may not see is a 404. API keys need the ``moderation`` scope.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import URLPattern, path, re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import parsers, permissions, renderers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.services.catalog import owner_named
from governance.api import serializers as s
from governance.api.files import CSVRenderer, JSONErrors, TextRenderer
from governance.models import ContentList, Policy, Suspension
from governance.services import lists, policies, suspensions
from portal.api.v1 import KeyScope
from portal.auth import acting_user
from portal.errors import NotFound
from portal.models import Organization
from portal.models.ownership import Action

ID = [OpenApiParameter("id", int, OpenApiParameter.PATH, description="The row's id")]
VERSION = [*ID, OpenApiParameter("number", int, OpenApiParameter.PATH, description="Version")]
ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid; 'param' names the field"),
    403: OpenApiResponse(OpenApiTypes.OBJECT, description="Not allowed"),
    404: OpenApiResponse(OpenApiTypes.OBJECT, description="None you may see"),
}
CONFLICT = {409: OpenApiResponse(OpenApiTypes.OBJECT, description="Name taken, or not allowed")}


def _get(queryset: QuerySet[Any], pk: str, what: str) -> Any:
    """The row ``pk`` of ``queryset``; NotFound for a malformed id or one not in it."""
    row = None
    if pk.isascii() and pk.isdigit() and int(pk) <= s.MAX_ID:
        row = queryset.filter(pk=int(pk)).first()
    if row is None:
        raise NotFound(f"No such {what}.", param="id")
    return row


class GovernanceViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    permission_classes = [permissions.IsAuthenticated, KeyScope]
    scope = "moderation"
    write_actions: frozenset[str] = frozenset()

    def mode(self) -> Action:
        return "write" if self.action in self.write_actions else "read"


# --- policies -----------------------------------------------------------------------------


class PolicyViewSet(GovernanceViewSet):
    """Moderation policies of you and the organisations you manage: per category a
    threshold and an action, for input and output; narrowed to one deployment or API
    key, or the owner's default."""

    queryset = Policy.objects.none()  # for the schema; get_queryset scopes it
    serializer_class = s.PolicySerializer
    write_actions = frozenset({"partial_update", "destroy"})

    def get_queryset(self) -> QuerySet[Policy]:
        rows = policies.visible_policies(self.request.user, self.mode())
        return rows.select_related("api_key", "created_by").order_by("namespace", "name")

    @extend_schema(parameters=[s.PolicyQuerySerializer], responses=s.PolicySerializer(many=True))
    def list(self, request: Request) -> Response:
        query = s.PolicyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = self.get_queryset()
        if query.validated_data.get("owner"):
            rows = rows.filter(namespace=query.validated_data["owner"])
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.PolicySerializer(page, many=True).data)

    @extend_schema(
        request=s.PolicyCreateSerializer,
        responses={201: s.PolicySerializer, **ERRORS, **CONFLICT},
    )
    def create(self, request: Request) -> Response:
        data = s.PolicyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = dict(data.validated_data)
        user = acting_user(request)
        owner = owner_named(user, given.pop("owner", None))
        row = policies.create_policy(user, owner, given)
        return Response(s.PolicySerializer(row).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=ID, responses={200: s.PolicySerializer, 404: ERRORS[404]})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.PolicySerializer(_get(self.get_queryset(), pk, "policy")).data)

    @extend_schema(
        parameters=ID,
        request=s.PolicyWriteSerializer(partial=True),
        responses={200: s.PolicySerializer, **ERRORS, **CONFLICT},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        """Change some fields; the policy's version grows by one."""
        row = _get(self.get_queryset(), pk, "policy")
        data = s.PolicyWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        row = policies.update_policy(acting_user(request), row, dict(data.validated_data))
        return Response(s.PolicySerializer(row).data)

    @extend_schema(parameters=ID, responses={204: None, 404: ERRORS[404]})
    def destroy(self, request: Request, pk: str) -> Response:
        policies.delete_policy(acting_user(request), _get(self.get_queryset(), pk, "policy"))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- lists --------------------------------------------------------------------------------


class ListViewSet(GovernanceViewSet):
    """Lexicons, allow-lists and question banks, each a history of versions."""

    queryset = ContentList.objects.none()  # for the schema; get_queryset scopes it
    serializer_class = s.ContentListSerializer
    write_actions = frozenset({"destroy", "change", "new_version", "import_file"})

    def get_queryset(self) -> QuerySet[ContentList]:
        rows = lists.visible_lists(self.request.user, self.mode())
        rows = rows.select_related("current", "created_by").defer("current__items")
        return rows.order_by("namespace", "name")

    def named(self, pk: str) -> ContentList:
        found: ContentList = _get(self.get_queryset(), pk, "list")
        return found

    @extend_schema(parameters=[s.ListQuerySerializer], responses=s.ContentListSerializer(many=True))
    def list(self, request: Request) -> Response:
        query = s.ListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        given = query.validated_data
        rows = self.get_queryset()
        if given.get("owner"):
            rows = rows.filter(namespace=given["owner"]).exclude(owner_user=None, owner_org=None)
        if given.get("kind"):
            rows = rows.filter(kind=given["kind"])
        if given.get("platform") is not None:
            platform = {"owner_user": None, "owner_org": None}
            rows = rows.filter(**platform) if given["platform"] else rows.exclude(**platform)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.ContentListSerializer(page, many=True).data)

    @extend_schema(
        request=s.ContentListCreateSerializer,
        responses={201: s.ContentListSerializer, **ERRORS, **CONFLICT},
    )
    def create(self, request: Request) -> Response:
        """A new list with its first version (``platform``: staff only)."""
        data = s.ContentListCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = dict(data.validated_data)
        user = acting_user(request)
        owner = None if given.pop("platform") else owner_named(user, given.pop("owner", None))
        given.pop("owner", None)
        row = lists.create_list(user, owner, given.pop("name"), given.pop("kind"), **given)
        return Response(s.ContentListSerializer(row).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=ID, responses={200: s.ContentListSerializer, 404: ERRORS[404]})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.ContentListSerializer(self.named(pk)).data)

    @extend_schema(parameters=ID, responses={204: None, 404: ERRORS[404], **CONFLICT})
    def destroy(self, request: Request, pk: str) -> Response:
        """Delete a list and its history (not a built-in one)."""
        lists.delete_list(acting_user(request), self.named(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=ID, responses={200: s.ListVersionSerializer(many=True), 404: ERRORS[404]}
    )
    def versions(self, request: Request, pk: str) -> Response:
        """The list's history, newest first."""
        row = self.named(pk)
        history = row.versions.select_related("created_by").defer("items").order_by("-number")
        page = self.paginate_queryset(history)
        return self.get_paginated_response(s.ListVersionSerializer(page, many=True).data)

    @extend_schema(
        parameters=ID,
        request=s.ListVersionCreateSerializer,
        responses={201: s.ListVersionSerializer, **ERRORS},
    )
    def new_version(self, request: Request, pk: str) -> Response:
        """Save the whole item list as a new version (the current one when unchanged)."""
        row = self.named(pk)
        data = s.ListVersionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        version = lists.new_version(acting_user(request), row, given["items"], given["note"])
        return Response(s.ListVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=VERSION, responses={200: s.ListVersionDetailSerializer, **ERRORS})
    def version(self, request: Request, pk: str, number: str) -> Response:
        """One version with its items."""
        return Response(s.ListVersionDetailSerializer(self._version(pk, number)).data)

    def _version(self, pk: str, number: str) -> Any:
        versions = self.named(pk).versions.select_related("created_by")
        found = None
        if number.isascii() and number.isdigit() and int(number) <= s.MAX_ID:
            found = versions.filter(number=int(number)).first()
        if found is None:
            raise NotFound("No such version.", param="number")
        return found

    @extend_schema(
        parameters=ID,
        request=s.ItemsChangeSerializer,
        responses={201: s.ListVersionSerializer, **ERRORS},
    )
    def change(self, request: Request, pk: str) -> Response:
        """Add and/or remove items: one new version."""
        row = self.named(pk)
        data = s.ItemsChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        version = lists.change_items(
            acting_user(request),
            row,
            add=given.get("add"),
            remove=given.get("remove"),
            note=given["note"],
        )
        return Response(s.ListVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class ListImportViewSet(ListViewSet):
    """Import a text or CSV file into a list (multipart)."""

    parser_classes = [parsers.MultiPartParser, parsers.FormParser]

    @extend_schema(
        parameters=ID,
        request={"multipart/form-data": s.ImportSerializer},
        responses={201: s.ListVersionSerializer, **ERRORS},
    )
    def import_file(self, request: Request, pk: str) -> Response:
        """A new version with the file's items added (or, ``replace``, instead); errors
        name their lines."""
        row = self.named(pk)
        data = s.ImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        upload = given["file"]
        fmt = given.get("format") or ("csv" if str(upload.name).lower().endswith(".csv") else "txt")
        version = lists.import_into(
            acting_user(request),
            row,
            upload.read(lists.MAX_IMPORT_BYTES + 1),
            fmt,
            replace=given["replace"],
            default_category=given["default_category"],
            note=given["note"],
        )
        return Response(s.ListVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class ListExportViewSet(JSONErrors, ListViewSet):
    """A version's items as a file."""

    renderer_classes = [renderers.JSONRenderer, TextRenderer, CSVRenderer]

    @extend_schema(
        parameters=[*VERSION, s.ExportQuerySerializer],
        responses={
            (200, "text/plain"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
            (400, "application/json"): ERRORS[400],
            (404, "application/json"): ERRORS[404],
        },
    )
    def export(self, request: Request, pk: str, number: str) -> HttpResponse:
        """Download a version as txt (``text<TAB>category[<TAB>weight]``) or CSV, in the
        form the import reads back."""
        query = s.ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        asked = request.accepted_renderer.format
        fmt = query.validated_data.get("format") or (asked if asked in lists.FORMATS else "txt")
        version = self._version(pk, number)
        body = lists.export_items(version.items, fmt)
        kind = "text/csv" if fmt == "csv" else "text/plain"
        response = HttpResponse(body, content_type=f"{kind}; charset=utf-8")
        filename = f"{version.content_list.name}-v{version.number}.{fmt}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


# --- suspensions --------------------------------------------------------------------------


class SuspensionViewSet(GovernanceViewSet):
    """Users throttled or suspended for repeated violations (staff: all; an
    organisation's owners and admins: the organisation's)."""

    queryset = Suspension.objects.none()  # for the schema; get_queryset scopes it
    serializer_class = s.SuspensionSerializer

    def get_queryset(self) -> QuerySet[Suspension]:
        rows = suspensions.visible(self.request.user)
        return rows.select_related("user", "org", "lifted_by").order_by("-created_at", "-pk")

    @extend_schema(
        parameters=[s.SuspensionQuerySerializer], responses=s.SuspensionSerializer(many=True)
    )
    def list(self, request: Request) -> Response:
        query = s.SuspensionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        given = query.validated_data
        rows = self.get_queryset()
        if given.get("user"):
            rows = rows.filter(user__username=given["user"])
        if given.get("active") is not None:
            active = suspensions.active_q()
            rows = rows.filter(active) if given["active"] else rows.exclude(active)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.SuspensionSerializer(page, many=True).data)

    @extend_schema(
        request=s.SuspensionCreateSerializer, responses={201: s.SuspensionSerializer, **ERRORS}
    )
    def create(self, request: Request) -> Response:
        """Throttle or suspend a user by hand."""
        from django.contrib.auth import get_user_model

        data = s.SuspensionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        user = get_user_model().objects.filter(username=given["user"]).first()
        if user is None:
            raise NotFound("No such user.", param="user")
        org = None
        if given.get("org"):
            org = Organization.objects.filter(name=given["org"]).first()
            if org is None:
                raise NotFound("No such organisation.", param="org")
        row = suspensions.apply_by(
            acting_user(request), user, org, given["level"], given.get("until"), given["reason"]
        )
        return Response(s.SuspensionSerializer(row).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=ID, responses={200: s.SuspensionSerializer, 404: ERRORS[404]})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.SuspensionSerializer(_get(self.get_queryset(), pk, "suspension")).data)

    @extend_schema(
        parameters=ID,
        request=None,
        responses={200: s.SuspensionSerializer, 404: ERRORS[404], **CONFLICT},
    )
    def lift(self, request: Request, pk: str) -> Response:
        """End a suspension now."""
        row: Suspension = _get(self.get_queryset(), pk, "suspension")
        lifted = suspensions.lift(acting_user(request), row)
        return Response(s.SuspensionSerializer(lifted).data)


ID_PATH = r"(?P<pk>[^/]+)/"
policy = PolicyViewSet.as_view
content_list = ListViewSet.as_view
suspension = SuspensionViewSet.as_view

urlpatterns: list[URLPattern] = [
    path("policies/", policy({"get": "list", "post": "create"}), name="governance-policies"),
    re_path(
        r"^policies/" + ID_PATH + "$",
        policy({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="governance-policy",
    ),
    path("lists/", content_list({"get": "list", "post": "create"}), name="governance-lists"),
    re_path(
        r"^lists/" + ID_PATH + "$",
        content_list({"get": "retrieve", "delete": "destroy"}),
        name="governance-list",
    ),
    re_path(
        r"^lists/" + ID_PATH + "versions/$",
        content_list({"get": "versions", "post": "new_version"}),
        name="governance-list-versions",
    ),
    re_path(
        r"^lists/" + ID_PATH + r"versions/(?P<number>[^/]+)/$",
        content_list({"get": "version"}),
        name="governance-list-version",
    ),
    re_path(
        r"^lists/" + ID_PATH + r"versions/(?P<number>[^/]+)/export$",
        ListExportViewSet.as_view({"get": "export"}),
        name="governance-list-export",
    ),
    re_path(
        r"^lists/" + ID_PATH + "items$",
        content_list({"post": "change"}),
        name="governance-list-items",
    ),
    re_path(
        r"^lists/" + ID_PATH + "import$",
        ListImportViewSet.as_view({"post": "import_file"}),
        name="governance-list-import",
    ),
    path(
        "suspensions/",
        suspension({"get": "list", "post": "create"}),
        name="governance-suspensions",
    ),
    re_path(
        r"^suspensions/" + ID_PATH + "$",
        suspension({"get": "retrieve"}),
        name="governance-suspension",
    ),
    re_path(
        r"^suspensions/" + ID_PATH + "lift$",
        suspension({"post": "lift"}),
        name="governance-suspension-lift",
    ),
]
