"""Routes: OpenAI's ``/v1/moderations`` (wired by ``portal.urls`` before the /v1 catch-all)."""

from django.urls import path

from governance import v1

v1_urlpatterns = [
    path("v1/moderations", v1.ModerationsView.as_view(), name="v1-moderations"),
]
