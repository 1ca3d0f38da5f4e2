"""The runs API of the evaluation sub-platform (``/api/evaluation/``): tasks, suites and
endpoints by ``namespace/name``, runs by id with their samples and events. Views check
(tenancy through :class:`~portal.api.base.OwnedViewSet`), call a service, serialize."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import permissions, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.api import serializers as s
from evaluation.models import Endpoint, EvalRun, EvalSuite, EvalTask
from evaluation.services import catalog, endpoints, runs
from evaluation.services.catalog import owner_named
from portal.api.base import OwnedViewSet
from portal.auth import acting_user
from portal.errors import NotFound

NAMED_PATH = [
    OpenApiParameter("namespace", str, OpenApiParameter.PATH, description="Owner's namespace"),
    OpenApiParameter("name", str, OpenApiParameter.PATH, description="Name"),
]
RUN_PATH = [OpenApiParameter("id", str, OpenApiParameter.PATH, description="Run id")]


class NamedViewSet(OwnedViewSet):
    """Owned things addressed as ``{namespace}/{name}/``."""

    permission_classes = [permissions.IsAuthenticatedOrReadOnly]

    def get_object(self) -> Any:
        found = (
            self.get_queryset()
            .filter(namespace=self.kwargs["namespace"][:64], name=self.kwargs["name"][:96])
            .first()
        )
        if found is None:
            what = self.get_queryset().model._meta.verbose_name
            raise NotFound(f"No such {what}.", param="name")
        return found

    def listed(self, request: Request) -> QuerySet[Any]:
        query = s.CatalogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        given = query.validated_data
        rows = self.get_queryset()
        if given.get("search"):
            rows = rows.filter(
                Q(name__icontains=given["search"]) | Q(description__icontains=given["search"])
            )
        if given.get("owner"):
            rows = rows.filter(namespace=given["owner"])
        if given.get("builtin") is not None:
            rows = rows.filter(builtin=given["builtin"])
        return rows.order_by("namespace", "name")

    def page(self, rows: QuerySet[Any]) -> Response:
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class CatalogViewSet(NamedViewSet):
    """Tasks and suites alike: YAML documents created, changed and deleted through the
    catalogue's services (named by the subclass); built-ins are synced on first use."""

    create_item: ClassVar[Callable[..., Any]]
    update_item: ClassVar[Callable[..., Any]]
    delete_item: ClassVar[Callable[..., Any]]

    def get_queryset(self) -> QuerySet[Any]:
        catalog.ensure_builtin()
        return super().get_queryset()

    def list(self, request: Request) -> Response:
        return self.page(self.listed(request))

    def create(self, request: Request) -> Response:
        data = s.CatalogCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = acting_user(request)
        given = data.validated_data
        item = type(self).create_item(
            user, owner_named(user, given.get("owner")), given["yaml"], given["visibility"]
        )
        return Response(self.get_serializer(item).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, namespace: str, name: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def partial_update(self, request: Request, namespace: str, name: str) -> Response:
        item = self.get_object()
        data = s.CatalogUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        item = type(self).update_item(
            acting_user(request), item, given.get("yaml"), given.get("visibility")
        )
        return Response(self.get_serializer(item).data)

    def destroy(self, request: Request, namespace: str, name: str) -> Response:
        type(self).delete_item(acting_user(request), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


def _catalog_schema(serializer: type[Any]) -> Callable[[type[Any]], type[Any]]:
    return extend_schema_view(
        list=extend_schema(parameters=[s.CatalogQuerySerializer]),
        create=extend_schema(request=s.CatalogCreateSerializer, responses={201: serializer}),
        retrieve=extend_schema(parameters=NAMED_PATH),
        partial_update=extend_schema(parameters=NAMED_PATH, request=s.CatalogUpdateSerializer),
        destroy=extend_schema(parameters=NAMED_PATH, responses={204: None}),
    )


@_catalog_schema(s.EvalTaskSerializer)
class EvalTaskViewSet(CatalogViewSet):
    """Evaluation tasks (YAML documents) you may see; built-ins are ``openmaas/…``."""

    queryset = EvalTask.objects.all()
    serializer_class = s.EvalTaskSerializer
    create_item = staticmethod(catalog.create_task)
    update_item = staticmethod(catalog.update_task)
    delete_item = staticmethod(catalog.delete_task)


@_catalog_schema(s.EvalSuiteSerializer)
class EvalSuiteViewSet(CatalogViewSet):
    """Suites: tasks grouped with a declared aggregation into one score."""

    queryset = EvalSuite.objects.all()
    serializer_class = s.EvalSuiteSerializer
    create_item = staticmethod(catalog.create_suite)
    update_item = staticmethod(catalog.update_suite)
    delete_item = staticmethod(catalog.delete_suite)


@extend_schema_view(
    create=extend_schema(request=s.EndpointCreateSerializer, responses={201: s.EndpointSerializer}),
    retrieve=extend_schema(parameters=NAMED_PATH),
    partial_update=extend_schema(parameters=NAMED_PATH, request=s.EndpointUpdateSerializer),
    destroy=extend_schema(parameters=NAMED_PATH, responses={204: None}),
)
class EndpointViewSet(NamedViewSet):
    """External OpenAI-compatible endpoints; the key is write-only (``key_hint``)."""

    queryset = Endpoint.objects.all()
    serializer_class = s.EndpointSerializer
    permission_classes = [permissions.IsAuthenticated]

    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset().order_by("namespace", "name"))

    def create(self, request: Request) -> Response:
        data = s.EndpointCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = acting_user(request)
        given = dict(data.validated_data)
        owner = owner_named(user, given.pop("owner", None))
        endpoint = endpoints.create_endpoint(user, owner, **given)
        return Response(self.get_serializer(endpoint).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, namespace: str, name: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def partial_update(self, request: Request, namespace: str, name: str) -> Response:
        endpoint = self.get_object()
        data = s.EndpointUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = endpoints.update_endpoint(acting_user(request), endpoint, **data.validated_data)
        return Response(self.get_serializer(endpoint).data)

    def destroy(self, request: Request, namespace: str, name: str) -> Response:
        endpoints.delete_endpoint(acting_user(request), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(parameters=[s.RunQuerySerializer]),
    create=extend_schema(request=s.RunCreateSerializer, responses={202: s.EvalRunSerializer}),
    retrieve=extend_schema(parameters=RUN_PATH),
)
class EvalRunViewSet(OwnedViewSet):
    """Evaluation runs: start one, follow its progress, read its scores, samples and log."""

    queryset = EvalRun.objects.select_related("suite", "task", "endpoint", "model_version__repo")
    serializer_class = s.EvalRunSerializer
    permission_classes = [permissions.IsAuthenticatedOrReadOnly]
    write_actions = frozenset({"cancel"})

    def get_object(self) -> EvalRun:
        run = self.get_queryset().filter(pk=str(self.kwargs["id"])[:40]).first()
        if run is None:
            raise NotFound("No such evaluation run.", param="id")
        return run

    def list(self, request: Request) -> Response:
        query = s.RunQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        given = query.validated_data
        rows = self.get_queryset()
        if given.get("status"):
            rows = rows.filter(status=given["status"])
        if given.get("origin"):
            rows = rows.filter(source=given["origin"])
        if given.get("model"):
            rows = rows.filter(model_name=given["model"])
        if given.get("suite"):
            namespace, _, name = given["suite"].partition("/")
            rows = rows.filter(suite__namespace=namespace, suite__name=name)
        page = self.paginate_queryset(rows.order_by("-created_at", "-id"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        """Start a run of a suite or a task on a served model or an endpoint."""
        data = s.RunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = acting_user(request)
        given = dict(data.validated_data)
        given["owner"] = owner_named(user, given.get("owner"))
        run = runs.start_run(user, **given)
        return Response(self.get_serializer(run).data, status=status.HTTP_202_ACCEPTED)

    def retrieve(self, request: Request, id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(parameters=RUN_PATH, request=None, responses=s.EvalRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, id: str) -> Response:
        """Cancel a queued run, or ask a running one to stop; 409 once it has ended."""
        run = runs.cancel_run(acting_user(request), self.get_object())
        return Response(self.get_serializer(self.get_queryset().get(pk=run.pk)).data)

    @extend_schema(
        parameters=[*RUN_PATH, s.SampleQuerySerializer],
        responses=s.EvalSampleSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def samples(self, request: Request, id: str) -> Response:
        """The run's scored samples (prompt, output, extracted answer, metrics), paged."""
        run = self.get_object()
        query = s.SampleQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = runs.samples(run, query.validated_data.get("task"))
        if query.validated_data.get("failed"):
            rows = rows.exclude(error="")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.EvalSampleSerializer(page, many=True).data)

    @extend_schema(parameters=RUN_PATH, responses=s.EvalRunEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request: Request, id: str) -> Response:
        """The run's log (status changes, messages), oldest first, paged."""
        page = self.paginate_queryset(self.get_object().events.order_by("pk"))
        return self.get_paginated_response(s.EvalRunEventSerializer(page, many=True).data)


NAMED = r"(?P<namespace>[^/]+)/(?P<name>[^/]+)/$"
RUN = r"^runs/(?P<id>[A-Za-z0-9-]+)/"


def _routes(prefix: str, viewset: Any, basename: str) -> list[Any]:
    from django.urls import path, re_path

    return [
        path(
            f"{prefix}/",
            viewset.as_view({"get": "list", "post": "create"}),
            name=f"{basename}-list",
        ),
        re_path(
            f"^{prefix}/{NAMED}",
            viewset.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
            name=f"{basename}-detail",
        ),
    ]


def _run_routes() -> list[Any]:
    from django.urls import path, re_path

    view = EvalRunViewSet.as_view
    return [
        path("runs/", view({"get": "list", "post": "create"}), name="eval-run-list"),
        re_path(RUN + "$", view({"get": "retrieve"}), name="eval-run-detail"),
        re_path(RUN + "cancel/$", view({"post": "cancel"}), name="eval-run-cancel"),
        re_path(RUN + "samples/$", view({"get": "samples"}), name="eval-run-samples"),
        re_path(RUN + "events/$", view({"get": "events"}), name="eval-run-events"),
    ]


urlpatterns = [
    *_routes("tasks", EvalTaskViewSet, "eval-task"),
    *_routes("suites", EvalSuiteViewSet, "eval-suite"),
    *_routes("endpoints", EndpointViewSet, "eval-endpoint"),
    *_run_routes(),
]
