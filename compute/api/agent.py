"""The node agent's side of the portal: register, then heartbeat-and-pull.

A node holds only its node token; it never gets broker or database credentials. The
heartbeat answer is the node's whole desired state, so a lost or repeated call does
no harm: the next one converges.
"""

from __future__ import annotations

import logging
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
from compute.models import Engine, Node, Replica, ReplicaStatus, Workload, WorkloadStatus
from compute.services import nodes, workloads
from compute.services.scheduler import engine_on, place_pending, place_workloads
from portal.auth import bearer_token
from portal.models import ModelVersion
from portal.storage import store

logger = logging.getLogger(__name__)
URL_TTL_S = 6 * 3600


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
    if nodes.apply_workload_reports(node, data.validated_data["workloads"]):
        place_workloads()  # a requeued run may start elsewhere (or here) at once
    desired = [_desired(node, r) for r in nodes.desired_replicas(node)]
    return Response(
        {
            "replicas": desired,
            "workloads": _desired_workloads(node),
            "heartbeat_interval_s": settings.NODE_HEARTBEAT_INTERVAL_S,
        }
    )


def _engine_for(node: Node, replica: Replica) -> str:
    """The engine chosen at placement (rows placed before it was recorded: resolve now)."""
    return replica.engine or engine_on(node, replica.deployment) or Engine.TRANSFORMERS


def _files(version: ModelVersion) -> list[dict[str, Any]]:
    """A version's files with fresh presigned URLs (its ``files`` prefetched)."""
    objects = store()
    return [
        {
            "path": f.path,
            "size": f.size,
            "sha256": f.sha256,
            "url": objects.presigned_get("models", f.object_key, expires_s=URL_TTL_S),
        }
        for f in version.files.all()
    ]


def _model(version: ModelVersion) -> dict[str, Any]:
    return {"version_id": version.pk, "revision": version.revision, "files": _files(version)}


def _desired(node: Node, replica: Replica) -> dict[str, Any]:
    dep = replica.deployment
    version = dep.model_version
    adapters = [
        {"name": a.served_name, "revision": v.revision, "files": _files(v)}
        for a in dep.adapters.all()
        for v in [a.model_version]
    ]
    return {
        "id": replica.pk,
        "status": replica.status,
        "served_name": dep.served_name,
        "engine": _engine_for(node, replica),
        "engine_args": dep.engine_args,
        "gpu_indices": replica.gpu_indices,
        "secret": replica.secret,
        # Only to engines that plant the watermark; like the secret, never in argv or logs.
        "watermark_key": dep.watermark_key if dep.watermarked else "",
        "model": _model(version),
        "adapters": adapters,
        "restart": replica.status == ReplicaStatus.FAILED,
    }


def _desired_workloads(node: Node) -> list[dict[str, Any]]:
    """The node's assigned and running workloads, each described by its kind. One whose
    kind is not registered here, or whose description fails, is failed (and requeued
    while attempts are left) rather than breaking the node's heartbeat."""
    rows = (
        Workload.objects.filter(node=node, status__in=workloads.RUNNABLE)
        .select_related("model_version")
        .prefetch_related("model_version__files")
        .order_by("pk")
    )
    desired = []
    for workload in rows:
        try:
            desired.append(_desired_workload(workload))
        except Exception as exc:
            logger.exception("cannot describe %s", workload)
            reason = f"cannot describe the workload: {exc}"[:500]
            if workloads.transition(workload, WorkloadStatus.FAILED, reason, last_error=reason):
                workloads.requeue(workload, reason)
    return desired


def _desired_workload(workload: Workload) -> dict[str, Any]:
    kind = workloads.kinds.handler(workload.kind)
    if kind is None:
        raise LookupError(f"no workload kind {workload.kind!r} is registered")
    described = kind.describe(workload)
    return {
        "id": workload.pk,
        "attempt": workload.attempt,
        "kind": workload.kind,
        "entry": kind.entry,
        "token": workloads.token_for(workload),
        "gpu_indices": workload.gpu_indices,
        "nproc": max(1, workload.gpus),
        "model": _model(workload.model_version) if workload.model_version else None,
        "files": described.get("files", []),
        "spec": described.get("spec", {}),
    }
