"""The base viewset every app's owned resources use: tenancy is applied here, once."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import viewsets


class OwnedViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Scopes ``queryset`` with ``restrict(user, action)``: reads see what the user may
    read, writes only what they may write; anything else is a 404."""

    write_actions = frozenset({"update", "partial_update", "destroy"})

    def get_queryset(self) -> QuerySet[Any]:
        queryset = super().get_queryset()
        action = "write" if self.action in self.write_actions else "read"
        return queryset.restrict(self.request.user, action)  # type: ignore[attr-defined]
