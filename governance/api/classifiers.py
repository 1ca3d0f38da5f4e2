"""The classifiers API (``/api/governance/classifiers/``), platform staff only: train a
moderation classifier from a labelled dataset file, list the versions with their
held-out metrics, read one, activate one, or deactivate (back to the shipped model).
Anyone else gets 403 (signed in) or 401. The work is in
:mod:`governance.services.classifiers`."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import URLPattern, path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from governance.models import ClassifierVersion
from governance.services import classifiers, scope
from portal.auth import acting_user
from portal.errors import NotFound

NUMBER = [
    OpenApiParameter("number", int, OpenApiParameter.PATH, description="Version number"),
]


class IsPlatformStaff(permissions.BasePermission):
    """Staff or superusers only (classifiers are platform-wide)."""

    message = "Only platform staff manage moderation classifiers."

    def has_permission(self, request: Request, view: Any) -> bool:
        return scope.is_staff(request.user)


class TrainSerializer(serializers.Serializer):  # type: ignore[type-arg]
    dataset = serializers.CharField(
        max_length=200, help_text="The dataset hub repo with the labelled file: namespace/name"
    )
    revision = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="A version number (3 or v3), a revision hash, or empty for the newest "
        "ready version",
    )
    path = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="The CSV or JSON Lines file with TEXT and label (0/1) columns; may be "
        "left out when the version has one file",
    )


class ClassifierSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    created_by = serializers.SerializerMethodField(help_text="Username of who trained it")

    class Meta:
        model = ClassifierVersion
        fields = ["number", "source", "status", "metrics", "active", "error"]
        fields += ["created_by", "created_at", "finished_at"]
        read_only_fields = fields

    def get_created_by(self, row: ClassifierVersion) -> str | None:
        return row.created_by.username if row.created_by else None


class ClassifierViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Moderation classifier versions, newest first."""

    permission_classes = [permissions.IsAuthenticated, IsPlatformStaff]
    serializer_class = ClassifierSerializer

    def get_queryset(self) -> QuerySet[ClassifierVersion]:
        return ClassifierVersion.objects.select_related("created_by").order_by("-number")

    def get_object(self) -> ClassifierVersion:
        found = self.get_queryset().filter(number=self.kwargs["number"]).first()
        if found is None:
            raise NotFound("No such classifier version.", param="number")
        return found

    @extend_schema(operation_id="governance_classifiers_list", tags=["governance"])
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="governance_classifiers_train",
        tags=["governance"],
        request=TrainSerializer,
        responses={201: ClassifierSerializer},
    )
    def create(self, request: Request) -> Response:
        """Queue a training from a labelled dataset file; the version starts ``pending``."""
        given = TrainSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        row = classifiers.train_from_dataset(acting_user(request), **given.validated_data)
        return Response(self.get_serializer(row).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="governance_classifiers_read", tags=["governance"], parameters=NUMBER
    )
    def retrieve(self, request: Request, number: int) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        operation_id="governance_classifiers_activate",
        tags=["governance"],
        parameters=NUMBER,
        request=None,
        responses={200: ClassifierSerializer},
    )
    def activate(self, request: Request, number: int) -> Response:
        """Make this version the moderation pipeline's classifier."""
        row = classifiers.activate(acting_user(request), self.get_object())
        return Response(self.get_serializer(row).data)

    @extend_schema(
        operation_id="governance_classifiers_deactivate",
        tags=["governance"],
        request=None,
        responses={200: ClassifierSerializer, 204: None},
    )
    def deactivate(self, request: Request) -> Response:
        """Retire the active version: the shipped COLD model classifies again. Answers
        the retired version, or 204 when none was active."""
        row = classifiers.deactivate(acting_user(request))
        if row is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self.get_serializer(row).data)


urlpatterns: list[URLPattern] = [
    path(
        "classifiers/",
        ClassifierViewSet.as_view({"get": "list", "post": "create"}),
        name="governance-classifiers",
    ),
    path(
        "classifiers/deactivate",
        ClassifierViewSet.as_view({"post": "deactivate"}),
        name="governance-classifiers-deactivate",
    ),
    path(
        "classifiers/<int:number>/",
        ClassifierViewSet.as_view({"get": "retrieve"}),
        name="governance-classifier",
    ),
    path(
        "classifiers/<int:number>/activate",
        ClassifierViewSet.as_view({"post": "activate"}),
        name="governance-classifier-activate",
    ),
]
