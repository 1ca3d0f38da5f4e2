"""Validation of inference request bodies before they reach a replica.

Only what the gateway needs to route and to give clear 400s is checked here; engines
validate the rest with the same error shape.
"""

from __future__ import annotations

import json
from typing import Any

from portal.errors import PlatformError

_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "logprobs", "top_logprobs")


def _bad(message: str, param: str | None = None) -> PlatformError:
    return PlatformError(message, code="invalid_request", param=param)


def validate_body(body: bytes, kind: str) -> dict[str, Any]:
    """Parse and check a chat or completion body; raise PlatformError (400) if bad."""
    if not body:
        raise _bad("The request body is empty; send a JSON object.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string.", "model")
    if kind == "chat":
        _check_messages(payload.get("messages"))
    else:
        _check_prompt(payload.get("prompt"))
    _check_types(payload)
    return payload


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a string 'role'.", f"messages[{i}]")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad(
                f"messages[{i}].content must be a string or an array.", f"messages[{i}].content"
            )


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        return
    if (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in prompt
        )
    ):
        return
    raise _bad("'prompt' must be a string or an array of strings or token ids.", "prompt")


def _check_types(payload: dict[str, Any]) -> None:
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise _bad("'stream' must be a boolean.", "stream")
    for name in _NUMBER_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _bad(f"'{name}' must be a number.", name)
    for name in _INT_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _bad(f"'{name}' must be an integer.", name)
    stop = payload.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise _bad("'stop' must be a string or an array of strings.", "stop")
