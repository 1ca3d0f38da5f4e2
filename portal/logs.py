"""Structured logging: JSON lines carrying the request id of the request being served.

The gateway (and :func:`request_id_middleware` for Django's pages and ``/api``) set
:data:`request_id` for each request and return it to the client as ``x-request-id``.

Every record passes :class:`ContextFilter`, which stamps the request id and keeps
secrets out: API keys and bearer tokens are masked in every message, and extra
fields that carry content (prompts, messages, completions, bodies) are dropped unless
``LOG_CONTENT=1``. ``LOG_FORMAT`` picks :class:`JsonFormatter` (one JSON object per
line) or plain text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SECRETS = re.compile(r"\b(sk-|Bearer\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
CONTENT_FIELDS = frozenset({"prompt", "messages", "content", "completion", "body", "input", "text"})
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}


def accept_request_id(incoming: str | bytes | None) -> str:
    """The client's ``x-request-id`` when it is short and plain, else a new id."""
    if isinstance(incoming, bytes):
        incoming = incoming.decode("latin-1")
    if incoming and _SANE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def redact(text: str) -> str:
    """``text`` with API keys and bearer tokens masked."""
    return _SECRETS.sub(lambda m: m.group(1) + "***", text)


class ContextFilter(logging.Filter):
    """Stamps ``request_id``, masks secrets, drops content fields unless allowed."""

    def __init__(self, log_content: bool = False) -> None:
        super().__init__()
        self.log_content = log_content

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        # A malformed call stays as it is: the handler reports it as logging does.
        with contextlib.suppress(TypeError, ValueError):
            record.msg, record.args = redact(record.getMessage()), None
        if not self.log_content:
            for name in CONTENT_FIELDS & record.__dict__.keys():
                delattr(record, name)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                payload[name] = value
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False, default=str)


Handler = Callable[[HttpRequest], Any]


@sync_and_async_middleware
def request_id_middleware(get_response: Handler) -> Handler:
    """Sets :data:`request_id` for the request (the client's sane ``x-request-id`` or a
    new one) and returns it in the ``x-request-id`` response header."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            rid = accept_request_id(request.headers.get(HEADER))
            token = request_id.set(rid)
            try:
                response: HttpResponse = await get_response(request)
                response[HEADER] = rid
            finally:
                request_id.reset(token)
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        rid = accept_request_id(request.headers.get(HEADER))
        token = request_id.set(rid)
        try:
            response: HttpResponse = get_response(request)
            response[HEADER] = rid
        finally:
            request_id.reset(token)
        return response

    return middleware
