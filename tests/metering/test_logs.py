"""JSON log lines with the request id; keys and content stay out of logs."""

from __future__ import annotations

import json
import logging
import re

from django.test import Client

from portal.logs import ContextFilter, JsonFormatter, request_id


def format_record(message: str, *args, log_content: bool = False, **extra) -> dict:
    record = logging.LogRecord("portal.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    ContextFilter(log_content=log_content).filter(record)
    return json.loads(JsonFormatter().format(record))


def test_a_json_line_carries_the_request_id_and_extras():
    token = request_id.set("req-123")
    try:
        line = format_record("served %s", "olivia/tiny", status=200)
    finally:
        request_id.reset(token)
    assert line["message"] == "served olivia/tiny" and line["request_id"] == "req-123"
    assert line["level"] == "INFO" and line["logger"] == "portal.test" and line["status"] == 200


def test_keys_are_masked_and_prompts_dropped_unless_content_logging_is_on():
    key = "sk-" + "A1b2C3d4" * 5
    line = format_record("auth with %s", key, prompt="my secret question")
    assert key not in json.dumps(line) and "sk-***" in line["message"]
    assert "prompt" not in line
    debug = format_record("auth", prompt="my secret question", log_content=True)
    assert debug["prompt"] == "my secret question"
    assert "Bearer ***" in format_record("header Bearer abcdef123456")["message"]


def test_pages_and_api_return_a_request_id_and_keep_a_sane_incoming_one(db, owner):
    fresh = Client().get("/healthz")
    assert len(fresh["x-request-id"]) == 32
    kept = owner.client().get("/api/auth/me/", HTTP_X_REQUEST_ID="trace-abc.1")
    assert kept["x-request-id"] == "trace-abc.1"
    odd = Client().get("/signup/", HTTP_X_REQUEST_ID="odd id\nwith newline" + "x" * 200)
    assert re.fullmatch(r"[0-9a-f]{32}", odd["x-request-id"])  # replaced by a fresh id


def test_the_asgi_path_returns_the_request_id_too():
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    get = async_to_sync(AsyncClient().get)
    answer = get("/no-such-page/", headers={"x-request-id": "async-1"})
    assert answer.status_code == 404 and answer["x-request-id"] == "async-1"
