from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from compute.metering import views as metering_views
from datasets import v1 as files_v1
from governance import urls as governance_urls
from portal import views
from portal.errors import openai_error_body
from portal.gateway.app import handles as gateway_handles
from training import urls as training_urls


@csrf_exempt  # /v1 authenticates with a bearer key, never a cookie
def v1_not_found(request: HttpRequest, rest: str | None = None) -> JsonResponse:
    """Every ``/v1`` request the gateway does not serve, whatever its method: OpenAI's 404.

    A trailing slash is not the same path (as on OpenAI's servers); the message names the
    path without it.
    """
    message = f"Unknown endpoint {request.method} {request.path}."
    bare = request.path.rstrip("/")
    if bare != request.path and gateway_handles(bare):
        message += f" Did you mean {bare} (without the trailing slash)?"
    body = openai_error_body(message, error_type="invalid_request_error", code="unknown_url")
    return JsonResponse(body, status=404)


urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("signup/", views.sign_up, name="signup-page"),
    path("models/<str:namespace>/<str:name>/", views.model_detail, name="model-page"),
    path("keys/", views.api_keys, name="api-keys-page"),
    path("keys/<int:key_id>/revoke/", views.revoke_api_key, name="api-key-revoke"),
    path("playground/", views.playground, name="playground-page"),
    path("datasets/", include("datasets.urls")),
    path("fine-tuning/", include("training.page_urls")),
    path("evaluation/", include("evaluation.page_urls")),
    path("governance/", include("governance.page_urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("usage/", metering_views.usage_page, name="usage-page"),
    path("metrics", metering_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/training/runner/", include(training_urls.runner_urlpatterns)),
    path("api/fine-tuning/", include(training_urls.api_urlpatterns)),
    path("api/evaluation/", include("evaluation.urls")),
    path("api/governance/", include("governance.urls")),
    path("api/", include("portal.api.urls")),
    # OpenAI's /v1/files (Django, not the gateway): before the /v1 catch-all below.
    path("v1/files", files_v1.FilesView.as_view(), name="v1-files"),
    path("v1/files/<str:file_id>", files_v1.FileView.as_view(), name="v1-file"),
    path(
        "v1/files/<str:file_id>/content",
        files_v1.FileContentView.as_view(),
        name="v1-file-content",
    ),
    # OpenAI's /v1/fine_tuning (Django): before the /v1 catch-all too.
    *training_urls.v1_urlpatterns,
    # OpenAI's /v1/moderations (Django): before the /v1 catch-all too.
    *governance_urls.v1_urlpatterns,
    # Matches every /v1 path (``/v1`` itself too), so APPEND_SLASH never redirects one.
    re_path(r"^v1(?:/(?P<rest>.*))?$", v1_not_found),
]

handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
