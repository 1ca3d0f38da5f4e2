"""The governance sub-platform's Prometheus metrics (pure: no Django).

``openmaas_moderation_decisions_total{source, direction, action}``: every moderation
decision, ``source`` = ``gateway`` (inline, per request and answer) or ``moderations``
(``/v1/moderations``, one per input text: ``flag`` or ``allow``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

DECISIONS = Counter(
    "openmaas_moderation_decisions",
    "Moderation decisions, by source (gateway or moderations), direction and action.",
    ["source", "direction", "action"],
)
_children: dict[tuple[str, str, str], Any] = {}


def count_decision(source: str, direction: str, action: str) -> None:
    """Count one decision (children looked up once: ``labels()`` locks and builds a key)."""
    key = (source, direction, action)
    child = _children.get(key)
    if child is None:
        child = _children[key] = DECISIONS.labels(*key)
    child.inc()
