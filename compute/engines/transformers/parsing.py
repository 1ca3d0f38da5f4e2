"""Request validation: typed access to JSON bodies and parsing of generation requests."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from compute.engines.transformers.engine import Engine
from compute.engines.transformers.errors import ApiError, invalid_type, invalid_value
from compute.engines.transformers.sampling import SamplingParams

MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for the legacy completions API
MAX_CHAT_TOP_LOGPROBS = 20  # OpenAI's limit for chat completions
MAX_PROMPTS = 32  # completions prompts per request (each is a sequence of its own)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # every integer parameter must fit

# A surrogate escape (\uD800-\uDFFF) in a raw body; only then is the full check needed.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> Any:
    """``json.loads`` that turns every way a body can be unparseable into ValueError:
    invalid UTF-8, nesting too deep for the decoder, and lone UTF-16 surrogates (which no
    tokenizer can encode)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not valid UTF-8 ({exc.reason})") from exc
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise ValueError("the JSON is nested too deeply") from exc
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("a string holds a lone UTF-16 surrogate") from exc
    return value


class Fields:
    """Typed access to a JSON request body.

    Every accessor treats an absent key and an explicit ``null`` alike (the default), and
    raises :class:`ApiError` (400, naming the parameter) for a wrong type or range.
    """

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def required(self, name: str) -> Any:
        value = self.body.get(name)
        if value is None:
            raise ApiError(
                400,
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
        return value

    def int_(
        self, name: str, default: int | None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self.body.get(name)
        if value is None:
            return default
        # JSON booleans are Python ints; they are not acceptable counts.
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_type(name, "an integer", value)
        _check_range(name, value, INT64_MIN if lo is None else lo, INT64_MAX if hi is None else hi)
        return value

    def float_(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_type(name, "a number", value)
        if not math.isfinite(value):
            raise invalid_value(name, "expected a finite number.")
        _check_range(name, value, lo, hi)
        return float(value)

    def bool_(self, name: str, default: bool) -> bool:
        value = self.body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise invalid_type(name, "a boolean", value)
        return value

    def dict_(self, name: str) -> dict[str, Any]:
        value = self.body.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise invalid_type(name, "an object", value)
        return value

    def stop(self) -> list[str]:
        """``stop``: a string or a list of strings; empty strings are ignored."""
        value = self.body.get("stop")
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise invalid_type("stop", "a string or an array of strings", value)
        return [s for s in items if s]


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise invalid_value(name, f"{value} is below the minimum of {lo}.")
    if hi is not None and value > hi:
        raise invalid_value(name, f"{value} is above the maximum of {hi}.")


@dataclass(frozen=True)
class ParsedRequest:
    """A validated generation request: one or more prompts sharing sampling parameters.

    ``model`` is the requested name (echoed in responses); ``adapter`` the internal key of
    its LoRA adapter, ``None`` for the base model.
    """

    model: str
    adapter: str | None
    prompts: list[list[int]]
    params: SamplingParams
    stream: bool
    include_usage: bool
    echo_texts: list[str] = field(default_factory=list)
    chat_logprobs: bool = False


def _common_params(
    fields: Fields, max_tokens: int, *, logprobs: int | None, prompt_logprobs: bool
) -> SamplingParams:
    n = fields.int_("n", 1)
    if n != 1:
        raise invalid_value("n", "this engine only supports n=1.")
    best_of = fields.int_("best_of", 1)
    if best_of != 1:
        raise invalid_value("best_of", "this engine only supports best_of=1.")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=fields.float_("temperature", 1.0, 0.0, 2.0),
        top_p=fields.float_("top_p", 1.0, 0.0, 1.0),
        stop=tuple(fields.stop()),
        seed=fields.int_("seed", None),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        ignore_eos=fields.bool_("ignore_eos", False),
    )


def _stream_flags(fields: Fields) -> tuple[bool, bool]:
    stream = fields.bool_("stream", False)
    options = Fields(fields.dict_("stream_options"))
    include_usage = options.bool_("include_usage", False)
    return stream, stream and include_usage


def _message_text(index: int, content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    param = f"messages[{index}].content"
    if not isinstance(content, list):
        raise invalid_type(param, "a string or an array of content parts", content)
    texts = []
    for part in content:
        if (
            not isinstance(part, dict)
            or part.get("type") != "text"
            or not isinstance(part.get("text"), str)
        ):
            raise invalid_value(param, "only text content parts are supported.")
        texts.append(part["text"])
    return "".join(texts)


def _messages(fields: Fields) -> list[dict[str, str]]:
    raw = fields.required("messages")
    if not isinstance(raw, list):
        raise invalid_type("messages", "an array", raw)
    if not raw:
        raise invalid_value("messages", "expected at least one message.")
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise invalid_type(f"messages[{i}]", "an object", msg)
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise invalid_type(f"messages[{i}].role", "a string", role)
        messages.append({"role": role, "content": _message_text(i, msg.get("content"))})
    return messages


def parse_chat(engine: Engine, body: dict[str, Any]) -> ParsedRequest:
    """Validate a chat completions body and tokenize its messages."""
    fields = Fields(body)
    adapter = engine.check_model(fields)
    messages = _messages(fields)
    requested = fields.int_("max_completion_tokens", None, lo=1)
    if requested is None:
        requested = fields.int_("max_tokens", None, lo=1)
    want_logprobs = fields.bool_("logprobs", False)
    top = fields.int_("top_logprobs", 0, 0, MAX_CHAT_TOP_LOGPROBS) or 0
    stream, include_usage = _stream_flags(fields)
    prompt = engine.encode_chat(messages)
    budget = engine.completion_budget(len(prompt), requested, None, "messages")
    params = _common_params(
        fields, budget, logprobs=top if want_logprobs else None, prompt_logprobs=False
    )
    return ParsedRequest(
        body["model"], adapter, [prompt], params, stream, include_usage,
        chat_logprobs=want_logprobs,
    )  # fmt: skip


def _prompts(engine: Engine, raw: Any) -> tuple[list[list[int]], list[str]]:
    """Completions' ``prompt``: a string, token ids, or a list of either. Returns (ids, texts)."""
    if isinstance(raw, str):
        return [engine.encode_text(raw)], [raw]
    if not isinstance(raw, list) or not raw:
        raise invalid_type("prompt", "a string, an array of strings or an array of tokens", raw)
    if all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        raw = [raw]
    if len(raw) > MAX_PROMPTS:
        raise invalid_value("prompt", f"at most {MAX_PROMPTS} prompts per request.")
    prompts, texts = [], []
    for item in raw:
        if isinstance(item, str):
            prompts.append(engine.encode_text(item))
            texts.append(item)
        elif isinstance(item, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            if any(t < 0 or t >= engine.vocab_size for t in item):
                raise invalid_value("prompt", f"token ids must be in [0, {engine.vocab_size}).")
            prompts.append(list(item))
            texts.append(engine.tokenizer.decode(item))
        else:
            raise invalid_type("prompt", "a string, an array of strings or an array of tokens", raw)
    return prompts, texts


def parse_completion(engine: Engine, body: dict[str, Any]) -> ParsedRequest:
    """Validate a (legacy) completions body and tokenize its prompt(s)."""
    fields = Fields(body)
    adapter = engine.check_model(fields)
    prompts, texts = _prompts(engine, fields.required("prompt"))
    requested = fields.int_("max_tokens", None, lo=0)
    logprobs = fields.int_("logprobs", None, 0, MAX_COMPLETION_LOGPROBS)
    echo = fields.bool_("echo", False)
    stream, include_usage = _stream_flags(fields)
    if stream and len(prompts) > 1:
        raise invalid_value("prompt", "streaming supports a single prompt.")
    budgets = [engine.completion_budget(len(p), requested, 16, "prompt") for p in prompts]
    params = _common_params(
        fields, min(budgets), logprobs=logprobs, prompt_logprobs=echo and logprobs is not None
    )
    return ParsedRequest(
        body["model"], adapter, prompts, params, stream, include_usage,
        echo_texts=texts if echo else [],
    )  # fmt: skip
