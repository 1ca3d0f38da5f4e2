"""Moderation policies as data: parse, validate and apply one policy's rules. Pure (no
Django), so the gateway applies them in-process.

A policy's ``rules`` map a category key to a rule per direction::

    {"A1": {"input": {"threshold": 0.5, "action": "block"},
            "output": {"threshold": 0.5, "action": "block"}},
     "PII_ID_CARD": {"output": {"threshold": 0.5, "action": "redact"}},
     "default": {"input": {"threshold": 0.5, "action": "flag"}}}

A key is a detector (``PII_ID_CARD``), a risk (``A1_d``), a class (``A1``) or
``"default"``. For a scored category the most specific key that has a rule for the
direction decides (detector → its risk → its class → default); with none, the category
is allowed. The outcome of a text is the most severe action any category reached
(block > redact > flag > allow). Missing parts of a policy fall back to
:data:`DEFAULT_RULES`, the platform's default for a public service.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from governance.moderation.taxonomy import DETECTORS, is_known

DirectionName = Literal["input", "output"]
ActionName = Literal["allow", "flag", "redact", "block"]
DIRECTIONS: tuple[DirectionName, ...] = ("input", "output")
SEVERITY: dict[str, int] = {"allow": 0, "flag": 1, "redact": 2, "block": 3}
CLASSES = ("A1", "A2", "A3", "A4", "A5")

_BLOCK_BOTH = {
    "input": {"threshold": 0.5, "action": "block"},
    "output": {"threshold": 0.5, "action": "block"},
}
# Safe for a public service: the illegal-content class (A1) is blocked both ways;
# discrimination is flagged on input and blocked on output; personal information is
# redacted from answers (a user's own in a request is theirs to send); everything else
# that scores is flagged for review.
DEFAULT_RULES: dict[str, dict[str, dict[str, Any]]] = {
    "A1": _BLOCK_BOTH,
    "A2": {
        "input": {"threshold": 0.5, "action": "flag"},
        "output": {"threshold": 0.5, "action": "block"},
    },
    "A4_f": {
        "input": {"threshold": 0.5, "action": "allow"},
        "output": {"threshold": 0.5, "action": "redact"},
    },
    "default": {
        "input": {"threshold": 0.5, "action": "flag"},
        "output": {"threshold": 0.5, "action": "flag"},
    },
}
# Repeat offenders: blocked inputs of one user within ``window_s`` after which they are
# throttled to ``throttle_rpm`` requests a minute, then suspended for ``suspend_s``.
DEFAULT_OFFENDERS: dict[str, int] = {
    "window_s": 3600,
    "throttle_after": 5,
    "throttle_rpm": 6,
    "suspend_after": 20,
    "suspend_s": 86400,
}
# The explicit label added to generated text ("none", "start" or "end").
DEFAULT_LABELS: dict[str, str] = {"explicit": "none", "text": "人工智能生成"}
EXPLICIT_PLACES = ("none", "start", "end")
MAX_LABEL_TEXT = 64


class PolicyError(ValueError):
    """A policy document that does not validate; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Rule:
    threshold: float
    action: ActionName


@dataclass(frozen=True)
class Outcome:
    """What a policy does with one text in one direction."""

    action: ActionName
    categories: tuple[str, ...]  # the categories whose rule fired (action ≠ allow)


ALLOW = Outcome("allow", ())


@dataclass(frozen=True)
class Policy:
    """A parsed policy; ``ident`` and ``version`` name the row it came from (0: default)."""

    rules: Mapping[str, Mapping[str, Rule]]
    offenders: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_OFFENDERS))
    labels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    ident: int = 0
    version: int = 0
    # (category, direction) → rule, filled as categories are met (the rules never change).
    _found: dict[tuple[str, str], Rule | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def rule(self, category: str, direction: DirectionName) -> Rule | None:
        """The most specific rule for ``category`` in ``direction``."""
        try:
            return self._found[(category, direction)]
        except KeyError:
            pass
        risk = DETECTORS.get(category, category)
        found = None
        for key in dict.fromkeys((category, risk, risk.split("_")[0], "default")):
            found = self.rules.get(key, {}).get(direction)
            if found is not None:
                break
        self._found[(category, direction)] = found
        return found

    def outcome(self, direction: DirectionName, scores: Mapping[str, float]) -> Outcome:
        """The action for a text with these category scores."""
        if not scores:
            return ALLOW
        action: ActionName = "allow"
        fired: list[str] = []
        for category, score in scores.items():
            rule = self.rule(category, direction)
            if rule is None or rule.action == "allow" or score < rule.threshold:
                continue
            fired.append(category)
            if SEVERITY[rule.action] > SEVERITY[action]:
                action = rule.action
        return Outcome(action, tuple(sorted(fired)))

    def certain(self, direction: DirectionName) -> Any:
        """A ``decide`` for :meth:`Pipeline.run`: stop once the text is blocked."""
        return lambda scores: self.outcome(direction, scores).action == "block"


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(path, "must be a number")
    if not 0 <= value <= 1:
        raise PolicyError(path, "must be between 0 and 1")
    return float(value)


def _key_ok(key: str) -> bool:
    return key == "default" or key in CLASSES or key in DETECTORS or is_known(key)


def parse_rules(raw: Any, *, path: str = "rules") -> dict[str, dict[str, Rule]]:
    """Validate a ``rules`` document; :class:`PolicyError` names the bad field."""
    if not isinstance(raw, dict):
        raise PolicyError(path, "must be an object")
    rules: dict[str, dict[str, Rule]] = {}
    for key, per_direction in raw.items():
        where = f"{path}.{key}"
        if not isinstance(key, str) or not _key_ok(key):
            raise PolicyError(
                where,
                "unknown category (a risk like A1_d, a class like A1, "
                "a detector like PII_ID_CARD, or 'default')",
            )
        if not isinstance(per_direction, dict) or not per_direction:
            raise PolicyError(where, "must map 'input' and/or 'output' to a rule")
        rules[key] = {}
        for direction, rule in per_direction.items():
            at = f"{where}.{direction}"
            if direction not in DIRECTIONS:
                raise PolicyError(at, "must be 'input' or 'output'")
            if not isinstance(rule, dict) or set(rule) - {"threshold", "action"}:
                raise PolicyError(at, "must be {'threshold': number, 'action': str}")
            action = rule.get("action")
            if action not in SEVERITY:
                raise PolicyError(f"{at}.action", "must be allow, flag, redact or block")
            threshold = _number(f"{at}.threshold", rule.get("threshold", 0.5))
            rules[key][direction] = Rule(threshold, action)
    return rules


def parse_offenders(raw: Any, *, path: str = "offenders") -> dict[str, int]:
    if not isinstance(raw, dict):
        raise PolicyError(path, "must be an object")
    merged = dict(DEFAULT_OFFENDERS)
    for key, value in raw.items():
        if key not in DEFAULT_OFFENDERS:
            raise PolicyError(f"{path}.{key}", f"unknown; one of {', '.join(DEFAULT_OFFENDERS)}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**7:
            raise PolicyError(f"{path}.{key}", "must be a whole number from 0 to 10000000")
        merged[key] = value
    return merged


def parse_labels(raw: Any, *, path: str = "labels") -> dict[str, str]:
    if not isinstance(raw, dict):
        raise PolicyError(path, "must be an object")
    merged = dict(DEFAULT_LABELS)
    for key, value in raw.items():
        if key not in DEFAULT_LABELS:
            raise PolicyError(f"{path}.{key}", "unknown; one of explicit, text")
        if not isinstance(value, str):
            raise PolicyError(f"{path}.{key}", "must be a string")
        merged[key] = value
    if merged["explicit"] not in EXPLICIT_PLACES:
        raise PolicyError(f"{path}.explicit", "must be none, start or end")
    if not 0 < len(merged["text"]) <= MAX_LABEL_TEXT:
        raise PolicyError(f"{path}.text", f"must have 1 to {MAX_LABEL_TEXT} characters")
    return merged


def build(
    rules: Any = None,
    offenders: Any = None,
    labels: Any = None,
    *,
    ident: int = 0,
    version: int = 0,
) -> Policy:
    """A policy from stored documents; a category or direction a policy leaves out
    keeps the default's rule."""
    merged = parse_rules(DEFAULT_RULES)
    for key, per_direction in parse_rules(rules or {}).items():
        merged[key] = {**merged.get(key, {}), **per_direction}
    return Policy(
        rules=merged,
        offenders=parse_offenders(offenders or {}),
        labels=parse_labels(labels or {}),
        ident=ident,
        version=version,
    )


DEFAULT_POLICY = build()
