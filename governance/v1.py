"""OpenAI's ``/v1/moderations`` in Django, so the official SDK works unchanged.

``{"input": str | [str] | [{"type": "text", "text": …}], "model": optional}`` → one
result per string (an array of content parts is one input, as on OpenAI), each with
OpenAI's 13 categories and the platform's own (TC260-003 risk codes). A key needs the
``moderation`` scope; a browser session needs none. Every error is in OpenAI's shape; no
input makes it answer 500.

The scores come from the same pipeline as the gateway's inline filter
(:func:`governance.services.snapshot.build_pipeline`: the shipped lexicon extended by the
platform's current lexicon and allow-list versions, patterns, PII and the active trained
classifier, else the shipped COLD model), run in full so every score is real, with
``MODERATION_THRESHOLDS`` (category code, class or ``"default"`` → score) as its flag
thresholds. With ``GOVERNANCE_GUARD_MODEL`` set, a text with a score inside
``GOVERNANCE_GUARD_BAND`` is also judged by that served model.

Freshness (:class:`LivePipeline`): every request reads the governance snapshot's counter
in Redis (:data:`~governance.services.snapshot.VERSION_KEY`, one ``GET``, bumped after
every commit that changes a policy, a list or the active classifier) and the pipeline is
rebuilt — database queries, the classifier's files — only when it moved, so a change is
seen by the first request after its commit, in every process, and a request that finds
nothing changed costs no database query. Read per request rather than cached for a
second like the gateway's snapshot: one ``GET`` is small next to running the classifier,
and it needs no background task in a synchronous view. While Redis cannot be reached the
last pipeline keeps serving (the counter is tried again at most once a second, so a dead
Redis costs no connection attempt per request) and a change made meanwhile is seen once
Redis answers again; a rebuild that fails also leaves the last pipeline serving, and is
retried a second later. Only a process that never built one answers 503.

Limits (settings, with defaults): ``MODERATION_MAX_INPUTS`` (32) strings per request,
``MODERATION_MAX_CHARS`` (32,000) characters per string.

Each result is counted in ``openmaas_moderation_decisions_total`` (``governance.metrics``)
as source ``moderations``, direction ``input``, action ``flag`` or ``allow``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from redis.exceptions import RedisError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.metrics import count_decision
from governance.moderation import classifier
from governance.moderation.guard import GuardChecker
from governance.moderation.pipeline import Pipeline, Verdict
from governance.moderation.taxonomy import DETECTORS, OPENAI_CATEGORIES, RISKS, openai_scores
from governance.services import classifiers, snapshot
from portal.api.parsers import SafeJSONParser
from portal.api.v1 import JSONOnly, KeyScope, error_responses, v1_exception_handler
from portal.errors import NotFound, PlatformError, Unavailable
from portal.services.keys import sync_redis

logger = logging.getLogger(__name__)

MODEL = "openmaas-moderation-1"
# OpenAI's model names are accepted so that code written for OpenAI runs unchanged.
MODEL_ALIASES = frozenset(
    {
        MODEL,
        "omni-moderation-latest",
        "omni-moderation-2024-09-26",
        "text-moderation-latest",
        "text-moderation-stable",
    }
)
FIELDS = ("input", "model")
DEFAULT_MAX_INPUTS = 32
DEFAULT_MAX_CHARS = 32_000
PLATFORM_CODES = (*RISKS, *DETECTORS)

REDIS_RETRY_S = 1.0  # after Redis failed, the counter is not read again for this long
REBUILD_RETRY_S = 1.0  # after a rebuild failed, it is not tried again for this long

# (the snapshot's version, None when Redis could not be read; the classifier generation)
Key = tuple[int | None, int]


class LivePipeline:
    """The moderation pipeline of this process, rebuilt when the platform's governance
    configuration changed (see the module docstring). Thread-safe: one thread rebuilds
    while the others keep the pipeline held (or wait, when none is held yet).

    ``build`` makes a pipeline (database queries, the classifier's files); ``redis``
    gives the client that reads the counter.
    """

    def __init__(
        self, build: Callable[[], Pipeline], redis: Callable[[], Any] = sync_redis
    ) -> None:
        self.build = build
        self.redis = redis
        self._lock = threading.Lock()
        self._held: tuple[Key, Pipeline] | None = None
        self._redis_retry_at = 0.0
        self._failed: tuple[Key, float] | None = None  # the key whose rebuild failed, until

    def version(self) -> int | None:
        """The snapshot's version in Redis; None while Redis cannot be reached."""
        now = time.monotonic()
        if now < self._redis_retry_at:
            return None
        try:
            return int(self.redis().get(snapshot.VERSION_KEY) or 0)
        except (RedisError, ValueError):
            self._redis_retry_at = now + REDIS_RETRY_S
            logger.warning("Redis unreachable: /v1/moderations keeps its last pipeline")
            return None

    def get(self) -> Pipeline:
        """The pipeline for this request (rebuilt first when the configuration moved)."""
        held = self._held
        version = self.version()
        if held is not None and version is None:
            return held[1]  # Redis down: whatever changed cannot be told
        key = (version, classifier.generation())
        if held is not None and (held[0] == key or self._failing(key)):
            return held[1]
        # A thread that finds another one rebuilding serves the held pipeline meanwhile.
        if not self._lock.acquire(blocking=held is None):
            assert held is not None
            return held[1]
        try:
            return self._rebuild(key)
        finally:
            self._lock.release()

    def _failing(self, key: Key) -> bool:
        failed = self._failed
        return failed is not None and failed[0] == key and time.monotonic() < failed[1]

    def _rebuild(self, key: Key) -> Pipeline:
        held = self._held
        if held is not None and held[0] == key:
            return held[1]  # built by the thread this one waited for
        try:
            built = self.build()
        except Exception as exc:
            self._failed = (key, time.monotonic() + REBUILD_RETRY_S)
            if held is None:
                logger.exception("the moderation pipeline could not be built")
                raise Unavailable("The moderation pipeline is not available; try again.") from exc
            logger.exception("the moderation pipeline could not be rebuilt; the last one stays")
            return held[1]
        # Building may have pointed the classifier loader elsewhere (sync_active): the
        # generation it left is the one this pipeline has.
        self._held = ((key[0], classifier.generation()), built)
        self._failed = None
        return built


def build_pipeline() -> Pipeline:
    """The gateway snapshot's pipeline with ``MODERATION_THRESHOLDS``."""
    built = snapshot.build_pipeline()
    return Pipeline(built.checkers, getattr(settings, "MODERATION_THRESHOLDS", None))


live = LivePipeline(build_pipeline)


def pipeline() -> Pipeline:
    """This process's moderation pipeline, current with the governance configuration."""
    return live.get()


def moderate(text: str, checks: Pipeline, guard: GuardChecker | None) -> Verdict:
    """The pipeline's verdict on ``text``, settled by the guard model when one is
    configured and a score is inside its band."""
    verdict = checks.run(text)
    if guard is not None:
        verdict = guard.settle(verdict, text, checks.threshold)
    return verdict


# --- request --------------------------------------------------------------------------


def parse_body(body: Any) -> tuple[list[str], str]:
    """The texts to moderate and the model named. Raises :class:`PlatformError` (400,
    or 404 for an unknown model) on anything else."""
    if not isinstance(body, dict):
        raise PlatformError("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        name = str(unknown[0])[:40]
        raise PlatformError(f"Unrecognized request argument supplied: {name}", param=name)
    return parse_input(body.get("input")), parse_model(body.get("model"))


def parse_model(model: Any) -> str:
    if model is None:
        return MODEL
    if not isinstance(model, str):
        raise PlatformError("'model' must be a string.", param="model")
    if model not in MODEL_ALIASES:
        raise NotFound(
            f"The model '{model[:64]}' does not exist; use '{MODEL}'.",
            code="model_not_found",
            param="model",
        )
    return MODEL


def parse_input(raw: Any) -> list[str]:
    """A string, an array of strings, or an array of content parts (one input)."""
    if raw is None:
        raise PlatformError(
            "Missing required parameter: 'input'.", code="missing_required_parameter", param="input"
        )
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(item, dict) for item in raw):
        texts = [_join_parts(raw)]
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        texts = list(raw)
    else:
        raise PlatformError(
            "'input' must be a string, an array of strings or an array of "
            '{"type": "text", "text": ...} objects.',
            param="input",
        )
    _check_limits(texts)
    return texts


def _join_parts(parts: list[dict[str, Any]]) -> str:
    texts = []
    for index, part in enumerate(parts):
        kind = part.get("type")
        if kind == "image_url":
            raise PlatformError(
                f"{MODEL} moderates text only; input[{index}] is an image. "
                "Send its text parts alone.",
                code="unsupported_input_type",
                param=f"input[{index}]",
            )
        if kind != "text" or not isinstance(part.get("text"), str):
            raise PlatformError(
                f'input[{index}] must be {{"type": "text", "text": "..."}}.',
                param=f"input[{index}]",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def _check_limits(texts: list[str]) -> None:
    most = int(getattr(settings, "MODERATION_MAX_INPUTS", DEFAULT_MAX_INPUTS))
    longest = int(getattr(settings, "MODERATION_MAX_CHARS", DEFAULT_MAX_CHARS))
    if not texts:
        raise PlatformError("'input' must not be an empty array.", param="input")
    if len(texts) > most:
        raise PlatformError(
            f"At most {most} inputs per request; got {len(texts)}.",
            code="too_many_inputs",
            param="input",
        )
    for index, text in enumerate(texts):
        if len(text) > longest:
            raise PlatformError(
                f"input[{index}] has {len(text)} characters; the most is {longest}.",
                code="input_too_long",
                param=f"input[{index}]",
            )


# --- response -------------------------------------------------------------------------


def result_object(verdict: Verdict) -> dict[str, Any]:
    """One OpenAI moderation result, plus the platform's categories and scores."""
    scores = {code: round(verdict.scores.get(code, 0.0), 6) for code in PLATFORM_CODES}
    flags = {code: verdict.categories.get(code, False) for code in PLATFORM_CODES}
    flagged_as = openai_scores({code: 1.0 for code, hit in verdict.categories.items() if hit})
    return {
        "flagged": verdict.flagged,
        "categories": {name: flagged_as[name] > 0 for name in OPENAI_CATEGORIES},
        "category_scores": _rounded(openai_scores(verdict.scores)),
        "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
        "platform_categories": flags,
        "platform_category_scores": scores,
    }


def _rounded(scores: Mapping[str, float]) -> dict[str, float]:
    return {name: round(score, 6) for name, score in scores.items()}


# --- schema ---------------------------------------------------------------------------


def _category_map(value: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "properties": dict.fromkeys(names, value), "required": list(names)}


_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "input": {
            "description": "A string, an array of strings (one result each), or an array "
            "of text parts (one input). Image parts are refused with 400.",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                {"type": "array", "items": _TEXT_PART, "minItems": 1},
            ],
        },
        "model": {"type": "string", "enum": sorted(MODEL_ALIASES)},
    },
    "required": ["input"],
    "additionalProperties": False,
}
_SCORE = {"type": "number", "minimum": 0, "maximum": 1}
_FLAG = {"type": "boolean"}
RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "model": {"type": "string"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "flagged": _FLAG,
                    "categories": _category_map(_FLAG, OPENAI_CATEGORIES),
                    "category_scores": _category_map(_SCORE, OPENAI_CATEGORIES),
                    "category_applied_input_types": _category_map(
                        {"type": "array", "items": {"type": "string", "enum": ["text"]}},
                        OPENAI_CATEGORIES,
                    ),
                    "platform_categories": _category_map(_FLAG, PLATFORM_CODES),
                    "platform_category_scores": _category_map(_SCORE, PLATFORM_CODES),
                },
                "required": [
                    "flagged",
                    "categories",
                    "category_scores",
                    "category_applied_input_types",
                    "platform_categories",
                    "platform_category_scores",
                ],
            },
        },
    },
    "required": ["id", "model", "results"],
}


# --- view -----------------------------------------------------------------------------


class ModerationsView(APIView):
    """Bearer key (``moderation`` scope) or session; OpenAI-shaped JSON and errors."""

    permission_classes = [IsAuthenticated, KeyScope]
    scope = "moderation"
    renderer_classes = [JSONRenderer]
    parser_classes = [SafeJSONParser]
    content_negotiation_class = JSONOnly

    def get_exception_handler(self) -> Any:
        return v1_exception_handler

    @extend_schema(
        operation_id="createModeration",
        tags=["moderations"],
        request={"application/json": REQUEST_SCHEMA},
        responses={
            200: RESPONSE_SCHEMA,
            **error_responses(400, 401, 403, 404, 413, 415, 429, 503),
        },
    )
    def post(self, request: Request) -> Response:
        """Classify texts: OpenAI's categories and scores, plus the platform's."""
        texts, model = parse_body(request.data)
        checks = pipeline()
        guard = classifiers.guard_checker()
        verdicts = [moderate(text, checks, guard) for text in texts]
        for verdict in verdicts:
            count_decision("moderations", "input", "flag" if verdict.flagged else "allow")
        results = [result_object(verdict) for verdict in verdicts]
        return Response({"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": results})
