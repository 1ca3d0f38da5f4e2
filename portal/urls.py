from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from compute.metering import views as metering_views
from portal import views
from portal.errors import openai_error_body


def v1_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    body = openai_error_body(
        f"Unknown endpoint {request.method} {request.path}.",
        error_type="invalid_request_error",
        code="unknown_url",
    )
    return JsonResponse(body, status=404)


urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("signup/", views.sign_up, name="signup-page"),
    path("models/<str:namespace>/<str:name>/", views.model_detail, name="model-page"),
    path("keys/", views.api_keys, name="api-keys-page"),
    path("keys/<int:key_id>/revoke/", views.revoke_api_key, name="api-key-revoke"),
    path("usage/", metering_views.usage_page, name="usage-page"),
    path("metrics", metering_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("portal.api.urls")),
    re_path(r"^v1/(?P<rest>.*)$", v1_not_found),
]

handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
