"""Routes of ``/api/evaluation/`` (wired by ``portal.urls``): runs and the catalogue, and
the boards (leaderboards, comparison, arena)."""

from django.urls import include, path

urlpatterns = [
    path("", include("evaluation.api.runs")),
    path("", include("evaluation.api.boards")),
]
