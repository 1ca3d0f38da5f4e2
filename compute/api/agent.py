"""The node agent's side of the portal: register, then heartbeat-and-pull.

A node holds only its node token; it never gets broker or database credentials. The
heartbeat answer is the node's whole desired state, so a lost or repeated call does
no harm: the next one converges.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, permissions
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
)
from rest_framework.request import Request
from rest_framework.response import Response

from compute.api.serializers import HeartbeatSerializer, InventorySerializer
from compute.models import Engine, Node, Replica, ReplicaStatus
from compute.services import nodes
from compute.services.scheduler import engine_on, place_pending
from portal.auth import bearer_token
from portal.storage import store


class NodeTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        node = nodes.node_for_token(token or "")
        if node is None:
            raise exceptions.AuthenticationFailed("Invalid or disabled node token.")
        return None, node

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="openmaas-node"'


class IsNode(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Node)


def _node(request: Request) -> Node:
    """The node a request is from (the views only run for authenticated nodes)."""
    assert isinstance(request.auth, Node)
    return request.auth


def _agent_view(methods: list[str]) -> Any:
    def wrap(func: Any) -> Any:
        func = permission_classes([IsNode])(func)
        func = authentication_classes([NodeTokenAuthentication])(func)
        return api_view(methods)(func)

    return wrap


@extend_schema(request=InventorySerializer, responses={200: OpenApiTypes.OBJECT})
@_agent_view(["POST"])
def register(request: Request) -> Response:
    data = InventorySerializer(data=request.data)
    data.is_valid(raise_exception=True)
    node = nodes.register_node(_node(request), nodes.Inventory(**data.validated_data))
    place_pending()
    return Response(
        {
            "node": node.name,
            "id": node.pk,
            "heartbeat_interval_s": settings.NODE_HEARTBEAT_INTERVAL_S,
        }
    )


@extend_schema(request=HeartbeatSerializer, responses={200: OpenApiTypes.OBJECT})
@_agent_view(["POST"])
def heartbeat(request: Request) -> Response:
    data = HeartbeatSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    node = _node(request)
    reports = data.validated_data["replicas"]
    nodes.heartbeat(node, reports)
    nodes.finish_stopping(node, {r["id"] for r in reports if r["status"] != "stopped"})
    desired = [_desired(node, r) for r in nodes.desired_replicas(node)]
    return Response(
        {"replicas": desired, "heartbeat_interval_s": settings.NODE_HEARTBEAT_INTERVAL_S}
    )


def _engine_for(node: Node, replica: Replica) -> str:
    """The engine chosen at placement (rows placed before it was recorded: resolve now)."""
    return replica.engine or engine_on(node, replica.deployment) or Engine.TRANSFORMERS


def _desired(node: Node, replica: Replica) -> dict[str, Any]:
    dep = replica.deployment
    version = dep.model_version
    objects = store()
    files = [
        {
            "path": f.path,
            "size": f.size,
            "sha256": f.sha256,
            "url": objects.presigned_get("models", f.object_key, expires_s=6 * 3600),
        }
        for f in version.files.all()
    ]
    return {
        "id": replica.pk,
        "status": replica.status,
        "served_name": dep.served_name,
        "engine": _engine_for(node, replica),
        "engine_args": dep.engine_args,
        "gpu_indices": replica.gpu_indices,
        "secret": replica.secret,
        "model": {"version_id": version.pk, "revision": version.revision, "files": files},
        "restart": replica.status == ReplicaStatus.FAILED,
    }
