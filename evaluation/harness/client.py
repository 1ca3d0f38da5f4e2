"""An OpenAI-compatible endpoint as the evaluator's model: log-likelihoods and generations.

Log-likelihoods come from ``/v1/completions`` with ``echo`` and ``logprobs``: the endpoint
scores the prompt ``context + continuation`` token by token and the continuation's tokens
are those that start at or after the end of the context (``text_offset``), so the client
needs no tokenizer. Several prompts go in one request (``batch_size``) and at most
``concurrency`` requests are in flight over one pooled connection set.

Every failure leaves as :class:`EndpointError` with one of three codes:
``endpoint_unreachable`` (nothing answers), ``endpoint_error`` (an HTTP error: key, model,
server) and ``bad_response`` (an answer the evaluator cannot use). Only transient failures
(connection, timeout, 429, 5xx) are retried, with exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from evaluation.harness.requests import (
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    RollingRequest,
    RollingResult,
)
from portal.errors import PlatformError

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
MAX_STOP_STRINGS = 4  # OpenAI's limit; the rest are applied here, after generation
_T = TypeVar("_T")
_R = TypeVar("_R")


class EndpointError(PlatformError):
    """The endpoint under evaluation failed; ``code`` says how.

    ``http_status`` is the endpoint's own status when it answered. ``request_specific`` is
    true when the failure may belong to one prompt of a batch (a 400, an unusable answer)
    rather than to the endpoint as a whole (unreachable, bad key, unknown model).
    """

    status = 502
    code = "endpoint_error"
    error_type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str = "endpoint_error",
        http_status: int | None = None,
        request_specific: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
        self.request_specific = request_specific


def bad_response(what: str) -> EndpointError:
    return EndpointError(
        f"the endpoint's answer is unusable: {what}", code="bad_response", request_specific=True
    )


def api_root(base_url: str) -> str:
    """The URL that ``/completions`` hangs off (a bare host gets ``/v1``); raises
    :class:`EndpointError` (``endpoint_unreachable``) for what is no http(s) URL."""
    url = base_url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError as exc:  # a malformed host or a port out of range
        raise invalid_url(base_url, str(exc)) from None
    if not valid:
        raise invalid_url(base_url, "expected http(s)://host[:port][/path]")
    return url + "/v1" if parts.path in ("", "/") else url


def invalid_url(base_url: str, reason: str) -> EndpointError:
    return EndpointError(
        f"invalid endpoint URL {base_url!r}: {reason}", code="endpoint_unreachable"
    )


@dataclass(frozen=True)
class EchoedPrompt:
    """Per-token logprobs of one echoed prompt (the endpoint's ``logprobs`` object)."""

    logprobs: list[float | None]
    top: list[dict[str, float] | None]
    offsets: list[int]


class OpenAIClient:
    """Async client of one model behind an OpenAI-compatible API.

    Use as ``async with OpenAIClient(...) as client`` (or call :meth:`aclose`); the HTTP
    pool is created inside the running event loop on first use.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        *,
        concurrency: int = 8,
        batch_size: int = 16,
        timeout_s: float = 120,
        max_retries: int = 3,
        backoff_s: float = 0.25,
    ) -> None:
        self.base_url = api_root(base_url)
        self.model = model
        self.concurrency = max(1, concurrency)
        self.batch_size = max(1, batch_size)
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._zero_tokens_ok = True  # echo with max_tokens 0 until the endpoint refuses it

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- public verbs -------------------------------------------------------------------

    async def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest]
    ) -> list[LoglikelihoodResult]:
        """One result per request, in order; raises :class:`EndpointError`."""
        return await self._batched(requests, self._loglikelihood_batch)

    async def rolling(self, requests: Sequence[RollingRequest]) -> list[RollingResult]:
        """Log-likelihood of whole texts: every echoed token but the first (it has no
        context) is summed and counted. Texts longer than the endpoint's context window
        fail with the endpoint's error."""
        return await self._batched(requests, self._rolling_batch)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One generation per request (concurrently, up to ``concurrency`` at a time)."""
        return await _gather_all([self._generate_one(r) for r in requests])

    # -- log-likelihood -----------------------------------------------------------------

    async def _batched(
        self, items: Sequence[_T], run: Callable[[list[_T]], Awaitable[list[_R]]]
    ) -> list[_R]:
        size = self.batch_size
        batches = [list(items[i : i + size]) for i in range(0, len(items), size)]
        results = await _gather_all([run(b) for b in batches])
        return [r for batch in results for r in batch]

    async def _loglikelihood_batch(
        self, batch: list[LoglikelihoodRequest]
    ) -> list[LoglikelihoodResult]:
        pairs = [split_pair(r.context, r.continuation) for r in batch]
        echoed = await self._echo([ctx + cont for ctx, cont in pairs])
        return [
            continuation_result(e, len(ctx), len(ctx + cont))
            for e, (ctx, cont) in zip(echoed, pairs, strict=True)
        ]

    async def _rolling_batch(self, batch: list[RollingRequest]) -> list[RollingResult]:
        echoed = await self._echo([r.text for r in batch])
        return [rolling_result(e) for e in echoed]

    async def _echo(self, prompts: list[str]) -> list[EchoedPrompt]:
        """Token logprobs of each prompt, scored without generating (the generated token
        is dropped when the endpoint insists on ``max_tokens >= 1``)."""
        if self._zero_tokens_ok:
            try:
                return parse_echo(await self._post_echo(prompts, 0), prompts, generated=0)
            except EndpointError as exc:
                if exc.http_status not in (400, 422):
                    raise
            data = await self._post_echo(prompts, 1)
            self._zero_tokens_ok = False
            logger.info("endpoint %s refuses max_tokens=0; scoring with 1", self.base_url)
            return parse_echo(data, prompts, generated=1)
        return parse_echo(await self._post_echo(prompts, 1), prompts, generated=1)

    async def _post_echo(self, prompts: list[str], max_tokens: int) -> dict[str, Any]:
        body = {
            "model": self.model,
            "prompt": prompts,
            "echo": True,
            "logprobs": 1,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        return await self._post("/completions", body)

    # -- generation ---------------------------------------------------------------------

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        stops = [s for s in request.until if s]
        if stops:
            body["stop"] = stops[:MAX_STOP_STRINGS]
        if request.messages is not None:
            data = await self._post("/chat/completions", {**body, "messages": request.messages})
            text, finish = parse_chat(data)
        else:
            data = await self._post("/completions", {**body, "prompt": request.prompt})
            text, finish = parse_completion(data)
        return cut_at_stops(text, finish, stops)

    # -- HTTP ---------------------------------------------------------------------------

    def _pool(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._http is None or self._slots is None or self._loop is not loop:
            # A pool belongs to the loop that opened it (each ``asyncio.run`` is a new one).
            self._loop = loop
            limits = httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            )
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=httpx.Timeout(self._timeout_s, connect=min(10.0, self._timeout_s)),
                limits=limits,
            )
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._http, self._slots

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON and return the decoded object, retrying transient failures."""
        http, slots = self._pool()
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                async with slots:
                    response = await http.post(path, json=body)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise invalid_url(self.base_url, str(exc)) from exc
            except httpx.HTTPError as exc:
                error = self._unreachable(exc, attempt)
                delay = self._backoff(attempt)
            except Exception as exc:  # the transport's own surprises; callers see one type
                raise EndpointError(
                    f"request to {self.base_url} failed: {exc!r}", code="endpoint_unreachable"
                ) from exc
            else:
                if response.status_code < 400:
                    return decode_json(response)
                error = self._http_error(response, attempt)
                if response.status_code not in RETRY_STATUSES:
                    raise error
                delay = max(self._backoff(attempt), retry_after(response))
            if attempt == attempts:
                raise error
            logger.info("retrying %s%s in %.2fs: %s", self.base_url, path, delay, error.message)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _backoff(self, attempt: int) -> float:
        return float(min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)))

    def _unreachable(self, exc: httpx.HTTPError, attempts: int) -> EndpointError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "cannot be reached"
        detail = str(exc) or type(exc).__name__
        return EndpointError(
            f"endpoint {self.base_url} {kind} ({detail}) after {attempts} attempt(s)",
            code="endpoint_unreachable",
        )

    def _http_error(self, response: httpx.Response, attempts: int) -> EndpointError:
        status, detail = response.status_code, error_detail(response)
        if status in (401, 403):
            message = f"endpoint {self.base_url} refused the API key ({status}): {detail}"
        elif status == 404 and "model" in detail.lower():
            message = f"endpoint {self.base_url} does not serve model {self.model!r}: {detail}"
        elif status == 404:
            message = (
                f"{response.request.url} not found (404); the base URL should be the API "
                f"root, e.g. https://host/v1: {detail}"
            )
        elif status in RETRY_STATUSES:
            message = (
                f"endpoint {self.base_url} answered {status} after {attempts} attempt(s): {detail}"
            )
        else:
            message = f"endpoint {self.base_url} rejected the request ({status}): {detail}"
        specific = status in (400, 413, 422)
        return EndpointError(message, http_status=status, request_specific=specific)


async def _gather_all(calls: list[Awaitable[_T]]) -> list[_T]:
    """Await all calls; the first failure (in order) is raised once all have finished."""
    done: list[_T] = []
    for result in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
        done.append(result)
    return done


# -- parsing (pure functions) -----------------------------------------------------------


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace into the continuation, as lm-eval does:
    tokenizers attach a space to the word after it, so ``"A: " + "x"`` scores ``" x"``."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def decode_json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_response(f"not JSON: {response.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise bad_response(f"expected a JSON object, got {type(data).__name__}")
    return data


def error_detail(response: httpx.Response) -> str:
    """The error message of an OpenAI-shaped (or DRF-shaped) error body, else its text."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str) and error:
            return error[:300]
    return json.dumps(data)[:300]


def retry_after(response: httpx.Response) -> float:
    """Seconds a 429/503 asks us to wait (capped), 0 when it does not say."""
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(response.headers.get("retry-after", 0))))
    except ValueError:
        return 0.0


def choices_of(data: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    """The answer's choices ordered by ``index``; exactly ``expected`` of them."""
    choices = data.get("choices")
    if choices is None and data.get("error"):
        raise bad_response(f"an error in a successful answer: {json.dumps(data['error'])[:300]}")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise bad_response("no 'choices' list")
    if len(choices) != expected:
        raise bad_response(f"{len(choices)} choices for {expected} prompt(s)")
    try:
        return sorted(choices, key=lambda c: int(c.get("index", 0)))
    except (TypeError, ValueError):
        raise bad_response("a choice's 'index' is not an integer") from None


def parse_echo(data: dict[str, Any], prompts: list[str], *, generated: int) -> list[EchoedPrompt]:
    """The prompt tokens' logprobs of each choice; the last ``generated`` tokens are dropped."""
    echoed = []
    for choice in choices_of(data, len(prompts)):
        tokens = parse_logprobs(choice.get("logprobs"))
        keep = len(tokens.offsets) - generated
        if keep < 1:
            raise bad_response("the echoed prompt has no tokens")
        echoed.append(
            EchoedPrompt(tokens.logprobs[:keep], tokens.top[:keep], tokens.offsets[:keep])
        )
    return echoed


def parse_logprobs(raw: Any) -> EchoedPrompt:
    if not isinstance(raw, dict):
        raise bad_response("a choice has no 'logprobs' (does the endpoint support echo?)")
    lps, top, offsets = raw.get("token_logprobs"), raw.get("top_logprobs"), raw.get("text_offset")
    if not (isinstance(lps, list) and isinstance(top, list) and isinstance(offsets, list)):
        raise bad_response("'logprobs' lacks token_logprobs, top_logprobs or text_offset")
    if not len(lps) == len(top) == len(offsets):
        raise bad_response("token_logprobs, top_logprobs and text_offset differ in length")
    if not all(lp is None or isinstance(lp, int | float) for lp in lps):
        raise bad_response("a token logprob is not a number")
    if not all(isinstance(o, int) for o in offsets):
        raise bad_response("a text_offset is not an integer")
    if not all(t is None or _is_top(t) for t in top):
        raise bad_response("a top_logprobs entry is not an object of numbers")
    return EchoedPrompt([None if lp is None else float(lp) for lp in lps], top, offsets)


def _is_top(entry: Any) -> bool:
    return isinstance(entry, dict) and all(isinstance(v, int | float) for v in entry.values())


def continuation_result(echoed: EchoedPrompt, boundary: int, end: int) -> LoglikelihoodResult:
    """Sum the logprobs of the tokens starting at or after ``boundary`` (a token straddling
    it belongs to the context, like lm-eval's separate context encoding). The first token
    is never scored (nothing precedes it). A continuation swallowed whole by the token
    straddling the boundary is scored as that token."""
    scored = [i for i, offset in enumerate(echoed.offsets) if offset >= boundary and i > 0]
    if not scored and end > boundary and len(echoed.offsets) > 1:
        scored = [len(echoed.offsets) - 1]
    total, greedy = 0.0, True
    for i in scored:
        logprob, top = echoed.logprobs[i], echoed.top[i]
        if logprob is None or not top:
            raise bad_response(f"token {i} of an echoed prompt has no logprob or top_logprobs")
        total += logprob
        greedy = greedy and logprob >= max(top.values())
    return LoglikelihoodResult(logprob=total, is_greedy=greedy, tokens=len(scored))


def rolling_result(echoed: EchoedPrompt) -> RollingResult:
    values = echoed.logprobs[1:]
    if any(lp is None for lp in values):
        raise bad_response("a token of an echoed text has no logprob")
    return RollingResult(logprob=sum(lp for lp in values if lp is not None), tokens=len(values))


def parse_chat(data: dict[str, Any]) -> tuple[str, str]:
    choice = choices_of(data, 1)[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise bad_response("a chat choice has no 'message'")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise bad_response("the message 'content' is not a string")
    return content or "", str(choice.get("finish_reason") or "")


def parse_completion(data: dict[str, Any]) -> tuple[str, str]:
    choice = choices_of(data, 1)[0]
    text = choice.get("text")
    if not isinstance(text, str):
        raise bad_response("a completion choice has no 'text'")
    return text, str(choice.get("finish_reason") or "")


def cut_at_stops(text: str, finish_reason: str, stops: list[str]) -> GenerationResult:
    """Cut before the first stop string (endpoints may ignore some or all of ``stop``)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        return GenerationResult(text=text[: min(hits)], finish_reason="stop")
    return GenerationResult(text=text, finish_reason=finish_reason)
