"""Validation of inference request bodies before they reach a replica.

Only what the gateway needs to route and to give clear 400s is checked here; engines
validate the rest with the same error shape. The checks are lean (this is the hot path):
one strict UTF-8 decode, one ``json.loads``, and per-field type checks.

Decisions:

- Every optional OpenAI parameter may be ``null`` (OpenAI treats it as absent).
- Integers must fit a signed 64-bit integer (vLLM's bound for ``seed``); counts may not be
  negative.
- Chat's ``logprobs`` is a boolean (with ``top_logprobs`` an integer 0–20); completions'
  ``logprobs`` is an integer (0–5).
- A completions ``prompt`` array holds at most :data:`MAX_PROMPTS` prompts and a request
  asks for at most :data:`MAX_CHOICES` choices (``n`` × prompts). vLLM bounds the same list
  (``VLLM_MAX_COMPLETION_PROMPTS``, default 1024); OpenAI caps ``n`` at 128. Ours is lower
  because each prompt is a separate sequence on a shared replica.
- A body nested past Python's recursion limit, invalid UTF-8 and lone UTF-16 surrogates
  (``"\\ud800"``, which no tokenizer can encode) are 400s.
"""

from __future__ import annotations

from typing import Any

from portal.errors import PlatformError
from portal.json_body import parse_json

MAX_PROMPTS = 32
MAX_CHOICES = 128
INT64 = (-(2**63), 2**63 - 1)

_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
# Counts: non-negative integers.
_COUNT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "best_of", "top_logprobs")
_BOOL_FIELDS = ("stream", "echo")


def _bad(message: str, param: str | None = None) -> PlatformError:
    return PlatformError(message, code="invalid_request", param=param)


def validate_body(body: bytes, kind: str) -> dict[str, Any]:
    """Parse and check a chat or completion body; raise PlatformError (400) if bad."""
    if not body:
        raise _bad("The request body is empty; send a JSON object.")
    try:
        payload = parse_json(body)
    except ValueError as exc:
        raise _bad(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string.", "model")
    _check_types(payload)
    if kind == "chat":
        _check_messages(payload.get("messages"))
        _check_bool(payload, "logprobs")
    else:
        _check_prompt(payload.get("prompt"), payload.get("n"))
        _check_int(payload, "logprobs", 0)
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


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT64[1]


def _check_prompt(prompt: Any, n: Any) -> None:
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, list) or not prompt:
        raise _bad("'prompt' must be a string or an array of strings or token ids.", "prompt")
    if all(_is_token(p) for p in prompt):
        return  # one prompt given as token ids
    for p in prompt:
        if not (isinstance(p, str) or (isinstance(p, list) and p and all(map(_is_token, p)))):
            raise _bad("'prompt' must be a string or an array of strings or token ids.", "prompt")
    if len(prompt) > MAX_PROMPTS:
        raise _bad(f"'prompt' holds more than {MAX_PROMPTS} prompts.", "prompt")
    if isinstance(n, int) and n * len(prompt) > MAX_CHOICES:
        raise _bad(f"'n' × prompts asks for more than {MAX_CHOICES} choices.", "n")


def _check_bool(payload: dict[str, Any], name: str, param: str | None = None) -> None:
    value = payload.get(name)
    if value is not None and not isinstance(value, bool):
        raise _bad(f"'{param or name}' must be a boolean.", param or name)


def _check_int(payload: dict[str, Any], name: str, lo: int = INT64[0]) -> None:
    value = payload.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{name}' must be an integer.", name)
    if not lo <= value <= INT64[1]:
        raise _bad(f"'{name}' must be between {lo} and {INT64[1]}.", name)


def _check_types(payload: dict[str, Any]) -> None:
    for name in _BOOL_FIELDS:
        _check_bool(payload, name)
    for name in _NUMBER_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _bad(f"'{name}' must be a number.", name)
    for name in _COUNT_FIELDS:
        _check_int(payload, name, 0)
    _check_int(payload, "seed")
    stop = payload.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise _bad("'stop' must be a string or an array of strings.", "stop")
    options = payload.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _bad("'stream_options' must be an object.", "stream_options")
        _check_bool(options, "include_usage", "stream_options.include_usage")
