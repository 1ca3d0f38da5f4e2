"""Structured logging: JSON lines carrying the request id of the request being served.

The gateway (and Django's middleware) set :data:`request_id` for each request and
return it to the client as ``x-request-id``.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
