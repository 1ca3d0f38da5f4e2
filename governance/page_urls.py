"""Pages under ``/governance/`` (filled in by the pages helper)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
