"""Routes: OpenAI's ``/v1/moderations`` (wired by ``portal.urls`` before the /v1
catch-all) and ``/api/governance/`` (policies and lists, the review queue and audit log,
provenance and verification, compliance reports, classifiers)."""

from django.urls import include, path

from governance import v1

v1_urlpatterns = [
    path("v1/moderations", v1.ModerationsView.as_view(), name="v1-moderations"),
]

urlpatterns = [
    path("", include("governance.api.policies")),
    path("", include("governance.api.review")),
    path("", include("governance.api.registry")),
    path("", include("governance.api.compliance")),
    path("", include("governance.api.classifiers")),
]
