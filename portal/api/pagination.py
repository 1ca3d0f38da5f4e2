"""Paging for every list in the API."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """DRF's limit/offset paging with DRF's own handling of odd values: a ``limit`` past
    :attr:`max_limit` is clamped to it, a negative or non-numeric ``limit``/``offset``
    falls back to the default, and an ``offset`` past the end gives an empty page. None of
    them reaches the database as an out-of-range integer."""

    default_limit = 50
    max_limit = 500
