"""Hub core API: accounts, keys, organisations, models. Views check, call, serialize."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import serializers as s
from portal.api.base import OwnedViewSet
from portal.auth import acting_user
from portal.errors import AuthenticationFailed, NotFound, PermissionDenied
from portal.lockout import locked_out_error
from portal.models import APIKey, Membership, ModelRepo, Organization
from portal.services import accounts, keys
from portal.storage import store


class _CSRFCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason


def check_anonymous_csrf(request: Request) -> None:
    """CSRF for the anonymous session endpoints (login, sign-up), as Django's ``LoginView``.

    A form, multipart or text body is what a foreign page can post without asking, so it
    needs Django's full check (token and origin). A JSON body cannot come from another
    origin without a CORS preflight, which this site never grants, so JSON clients (the
    SDKs, scripts) log in without a token; a browser's JSON post must still come from our
    own origin when it names one.
    """
    if request.content_type.split(";")[0].strip() == "application/json":
        origin = request.META.get("HTTP_ORIGIN")
        own = f"{request.scheme}://{request.get_host()}"
        if origin is not None and origin != own and origin not in settings.CSRF_TRUSTED_ORIGINS:
            raise PermissionDenied("CSRF Failed: Origin checking failed.", code="csrf_failed")
        return
    check = _CSRFCheck(lambda _: HttpResponse())
    check.process_request(request._request)
    reason = check.process_view(request._request, lambda _: HttpResponse(), (), {})
    if reason:
        raise PermissionDenied(f"CSRF Failed: {reason}", code="csrf_failed")


@extend_schema(request=s.SignUpSerializer, responses={201: s.UserSerializer})
@api_view(["POST"])
@permission_classes([permissions.AllowAny])
def sign_up(request: Request) -> Response:
    check_anonymous_csrf(request)
    data = s.SignUpSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    user = accounts.sign_up(**data.validated_data)
    return Response(s.UserSerializer(user).data, status=status.HTTP_201_CREATED)


@extend_schema(request=s.LoginSerializer, responses=s.UserSerializer)
@api_view(["POST"])
@permission_classes([permissions.AllowAny])
def log_in(request: Request) -> Response:
    check_anonymous_csrf(request)
    data = s.LoginSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    user = authenticate(request._request, **data.validated_data)
    if getattr(request._request, "axes_locked_out", False):
        raise locked_out_error()
    if user is None:
        raise AuthenticationFailed("Wrong username or password.", code="invalid_credentials")
    login(request._request, user)
    return Response(s.UserSerializer(user).data)


@extend_schema(request=None, responses={204: None})
@api_view(["POST"])
def log_out(request: Request) -> Response:
    logout(request._request)
    return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(responses=s.UserSerializer)
@api_view(["GET"])
def me(request: Request) -> Response:
    return Response(s.UserSerializer(request.user).data)


class APIKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):  # type: ignore[type-arg]
    """Your API keys. The secret is shown once, in the create response; DELETE revokes."""

    serializer_class = s.APIKeySerializer
    queryset = APIKey.objects.none()  # for the schema; get_queryset scopes to the user

    def get_queryset(self) -> Any:
        return APIKey.objects.filter(user=acting_user(self.request)).select_related("organization")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        days = given.get("expires_in_days")
        expires = timezone.now() + timedelta(days=days) if days else None
        key, raw = keys.create_api_key(
            request.user,
            given.get("name", ""),
            expires,
            scopes=given.get("scopes"),
            allowed_models=given.get("allowed_models"),
            rpm_limit=given.get("rpm_limit"),
            tpm_limit=given.get("tpm_limit"),
            max_concurrent=given.get("max_concurrent"),
            organization=(given.get("organization") or {}).get("name"),
        )
        body = dict(self.get_serializer(key).data, key=raw)
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        keys.revoke_api_key(request.user, self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrganizationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):  # type: ignore[type-arg]
    """Organisations you belong to; ``members`` lists and changes membership."""

    serializer_class = s.OrganizationSerializer
    queryset = Organization.objects.none()  # for the schema; get_queryset scopes to the user
    lookup_field = "name"

    def get_queryset(self) -> Any:
        return Organization.objects.filter(memberships__user=acting_user(self.request))

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = accounts.create_organization(
            self.request.user,
            serializer.validated_data["name"],
            serializer.validated_data.get("display_name", ""),
        )

    @extend_schema(methods=["GET"], responses=s.MembershipSerializer(many=True))
    @extend_schema(
        methods=["POST"], request=s.MembershipSerializer, responses=s.MembershipSerializer
    )
    @action(detail=True, methods=["get", "post"])
    def members(self, request: Request, name: str | None = None) -> Response:
        """GET: the members, paginated like every list. POST: add a member or change a
        role (owners and admins only, checked before the body), answering the membership."""
        org = self.get_object()
        if request.method == "POST":
            accounts.require_manager(request.user, org)
            data = s.MembershipSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            member = accounts.set_member(
                request.user,
                org,
                data.validated_data["user"]["username"],
                data.validated_data["role"],
            )
            return Response(s.MembershipSerializer(member).data)
        members = Membership.objects.filter(organization=org).select_related("user")
        page = self.paginate_queryset(members.order_by("created_at", "pk"))
        return self.get_paginated_response(s.MembershipSerializer(page, many=True).data)

    @action(detail=True, methods=["delete"], url_path=r"members/(?P<username>[^/]+)")
    def remove_member(
        self, request: Request, name: str | None = None, username: str = ""
    ) -> Response:
        accounts.remove_member(request.user, self.get_object(), username)
        return Response(status=status.HTTP_204_NO_CONTENT)


FULL_NAME = OpenApiParameter(
    "full_name",
    str,
    OpenApiParameter.PATH,
    description="The model's ``namespace/name``.",
    examples=[OpenApiExample("A model", value="olivia/pub")],
)


@extend_schema(parameters=[FULL_NAME])
class ModelRepoViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, OwnedViewSet
):
    """Models in the registry you may see; ``id`` is ``namespace/name``."""

    queryset = ModelRepo.objects.annotate(latest_number=Max("versions__number"))
    serializer_class = s.ModelRepoSerializer
    permission_classes = [permissions.IsAuthenticatedOrReadOnly]
    lookup_value_regex = r"[^/]+/[^/]+"
    lookup_url_kwarg = "full_name"
    http_method_names = ["get", "patch", "head", "options"]

    def get_object(self) -> ModelRepo:
        namespace, _, name = self.kwargs["full_name"].partition("/")
        repo = get_object_or_404(self.get_queryset(), namespace=namespace, name=name)
        self.check_object_permissions(self.request, repo)
        return repo

    @extend_schema(responses=s.ModelVersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, full_name: str = "") -> Response:
        repo = self.get_object()
        page = self.paginate_queryset(repo.versions.prefetch_related("files").order_by("number"))
        return self.get_paginated_response(s.ModelVersionSerializer(page, many=True).data)

    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>\d+)/download")
    def download(self, request: Request, full_name: str = "", number: str = "") -> Response:
        """Presigned download URLs of one version's files."""
        version = self.get_object().versions.filter(number=int(number)).first()
        if version is None:
            raise NotFound("No such version.")
        objects = store()
        files = [
            {
                "path": f.path,
                "size": f.size,
                "sha256": f.sha256,
                "url": objects.presigned_get("models", f.object_key),
            }
            for f in version.files.all()
        ]
        return Response({"revision": version.revision, "files": files})
