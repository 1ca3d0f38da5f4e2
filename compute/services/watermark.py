"""The portal's side of the green-list text watermark (:mod:`compute.engines.watermark`):
which deployments plant it, their tokenizers, and a text's score against each.

A deployment plants the watermark when its ``engine_args`` have ``watermark: true`` (the
transformers engine only; see :mod:`compute.services.engine_args`), keyed by its own
secret ``Deployment.watermark_key``, which never leaves the portal except to its engines.

Tokenizers are read from the model version's ``tokenizer.json`` in the object store with
the `tokenizers` library (not `transformers`: too heavy for web processes), and kept in a
small LRU cache keyed by the file's object key (content-addressed, so one entry per
distinct tokenizer however many versions share it).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from compute.engines.watermark import DEFAULT_DELTA, DEFAULT_GAMMA, Score, Watermark, key_bytes
from compute.engines.watermark import score as score_tokens
from compute.models import Deployment
from portal.models import ModelRepo, ModelVersion
from portal.storage import store

logger = logging.getLogger(__name__)

TOKENIZER_CACHE = 8  # tokenizers kept in memory per process


@dataclass(frozen=True)
class Detection:
    """A text's score against one deployment's watermark."""

    deployment: Deployment
    score: Score

    @property
    def model(self) -> str:
        """The model repo's full name (``namespace/name``)."""
        return self.deployment.model_version.repo.full_name


def watermark_of(dep: Deployment) -> Watermark | None:
    """The watermark ``dep``'s engines plant, or None when it is off."""
    if not dep.watermarked:
        return None
    args = dep.engine_args or {}
    return Watermark(
        key_bytes(dep.watermark_key),
        float(args.get("watermark_gamma", DEFAULT_GAMMA)),
        float(args.get("watermark_delta", DEFAULT_DELTA)),
    )


def watermarked_deployments(user: Any, limit: int) -> list[Deployment]:
    """Up to ``limit`` deployments (active or stopped: their texts outlive them) that plant
    the watermark and whose model ``user`` may read (anonymous: public models), newest
    first."""
    readable = ModelRepo.objects.restrict(user).values("pk")
    rows = Deployment.objects.filter(
        engine_args__watermark=True, model_version__repo__in=readable
    ).select_related("model_version__repo")
    return list(rows.order_by("-created_at", "-pk")[:limit])


def detect(user: Any, text: str, *, limit: int, max_tokens: int) -> list[Detection]:
    """``text``'s score against each watermarked deployment ``user`` may see (at most
    ``limit``, newest first; the first ``max_tokens`` tokens scored), best (highest z)
    first. Empty when there is no such deployment or none has a readable tokenizer."""
    found = []
    encoded: dict[int, list[int] | None] = {}
    for dep in watermarked_deployments(user, limit):
        watermark = watermark_of(dep)
        version_id = dep.model_version_id
        if version_id not in encoded:
            encoded[version_id] = _encode(dep.model_version, text, max_tokens)
        ids = encoded[version_id]
        if watermark is None or ids is None:
            continue
        found.append(Detection(dep, score_tokens(watermark, ids)))
    return sorted(found, key=lambda d: d.score.z_score, reverse=True)


def _encode(version: ModelVersion, text: str, max_tokens: int) -> list[int] | None:
    """The first ``max_tokens`` token ids of ``text`` by the version's tokenizer (no
    special tokens added, as the engine samples none into a text); None without one."""
    tokenizer = tokenizer_of(version)
    if tokenizer is None:
        return None
    return list(tokenizer.encode(text, add_special_tokens=False).ids[:max_tokens])


def tokenizer_of(version: ModelVersion) -> Tokenizer | None:
    """The version's ``tokenizer.json`` loaded (cached), or None when it has none or it
    does not load."""
    record = version.files.filter(path="tokenizer.json").first()
    if record is None:
        return None
    try:
        return _load_tokenizer(record.object_key)
    except Exception:  # the store is down: no detection now (a miss is not cached)
        logger.exception("cannot read the tokenizer of %s", version)
        return None


@functools.lru_cache(maxsize=TOKENIZER_CACHE)
def _load_tokenizer(object_key: str) -> Tokenizer | None:
    data = store().get_bytes("models", object_key)
    try:
        return Tokenizer.from_str(data.decode())
    except Exception:  # not a tokenizer `tokenizers` can read: no detection with it
        return None
