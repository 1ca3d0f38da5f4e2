"""Placeholder: filled in by the helper that owns it (see /work/gov2-contract.md)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
