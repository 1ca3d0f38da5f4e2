"""Pool administration: nodes (admins) and deployments (model writers, admins)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from compute.api import serializers as s
from compute.engines import engine_names, get_engine
from compute.engines.base import describe_schema
from compute.models import Deployment, Node, NodeStatus
from compute.services import deployments, nodes
from portal.errors import NotFound
from portal.models import ModelRepo
from portal.models.ownership import Action


class NodeViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):  # type: ignore[type-arg]
    """Pool nodes. Creating one returns its node token once; PATCH drains, disables or
    readmits a node (``status``) or pins its address; DELETE disables it."""

    queryset = Node.objects.all()
    serializer_class = s.NodeSerializer
    permission_classes = [permissions.IsAdminUser]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        node, token = nodes.create_node(
            request.user,
            data.validated_data["name"],
            data.validated_data.get("labels"),
            pinned_address=data.validated_data.get("pinned_address", ""),
        )
        return Response(
            dict(self.get_serializer(node).data, token=token), status=status.HTTP_201_CREATED
        )

    @extend_schema(request=s.NodeUpdateSerializer, responses=s.NodeSerializer)
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        node = self.get_object()
        data = s.NodeUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "pinned_address" in changes:
            node = nodes.pin_node_address(request.user, node, changes.pop("pinned_address"))
        if "status" in changes:
            node = nodes.set_node_status(request.user, node, changes.pop("status"))
        if changes:
            Node.objects.filter(pk=node.pk).update(**changes)
            node.refresh_from_db()
        return Response(s.NodeSerializer(node).data)

    def perform_destroy(self, instance: Node) -> None:
        nodes.set_node_status(self.request.user, instance, NodeStatus.DISABLED)


@extend_schema(responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
def engines(request: Request) -> Response:
    """The engines and the arguments each accepts in ``engine_args`` (type, range, allowed
    values; ``access``: ``open``, ``trusted`` (trusted model versions only), ``reserved``
    (set by the platform)). ``engine=auto`` needs arguments valid for both."""
    return Response(
        {
            "engines": [
                {"name": name, "arguments": describe_schema(get_engine(name).schema)}
                for name in engine_names()
            ]
        }
    )


class DeploymentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):  # type: ignore[type-arg]
    """Deployments of models you may read; changes need write access to the model."""

    serializer_class = s.DeploymentSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_context(self) -> dict[str, Any]:
        """Adds ``owner_repos`` (see ``shows_details``): who sees log tails and URLs."""
        context = dict(super().get_serializer_context())
        user = self.request.user
        context["owner_repos"] = (
            None
            if user.is_staff
            else set(ModelRepo.objects.restrict(user, "write").values_list("pk", flat=True))
        )
        return context

    def get_queryset(self) -> QuerySet[Deployment]:
        action: Action = "read" if self.action in ("list", "retrieve") else "write"
        repos = ModelRepo.objects.restrict(self.request.user, action)
        return (
            Deployment.objects.filter(model_version__repo__in=repos)
            .select_related("model_version")
            .prefetch_related("replica_set__node")
        )

    @extend_schema(request=s.DeploymentCreateSerializer, responses=s.DeploymentSerializer)
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = s.DeploymentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = dict(data.validated_data)
        namespace, _, name = params.pop("model").partition("/")
        repo = (
            ModelRepo.objects.restrict(request.user).filter(namespace=namespace, name=name).first()
        )
        if repo is None:
            raise NotFound("No such model.", param="model")
        number = params.pop("version", None)
        version = repo.versions.filter(number=number).first() if number else None
        if number and version is None:
            raise NotFound("The model has no such version.", param="version")
        dep = deployments.deploy_model(request.user, repo, version=version, **params)
        return Response(
            s.DeploymentSerializer(dep, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=s.DeploymentSerializer)
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        dep = self.get_object()
        data = s.DeploymentSerializer(dep, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        if "replicas" in data.validated_data:
            dep = deployments.scale_deployment(request.user, dep, data.validated_data["replicas"])
        return Response(s.DeploymentSerializer(dep, context=self.get_serializer_context()).data)

    def perform_destroy(self, instance: Deployment) -> None:
        deployments.stop_deployment(self.request.user, instance)
