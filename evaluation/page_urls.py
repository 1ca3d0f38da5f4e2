"""Pages of the evaluation sub-platform (``/evaluation/``)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
