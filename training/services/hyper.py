"""A fine-tune's settings from the request body: the method and its hyperparameters
(OpenAI's ``method`` or the older top-level ``hyperparameters``), the adapter (a platform
extension) and the resources it asks for. Every bad value is a 400 naming its ``param``.

``auto`` values are resolved from the training set's row count:

- ``n_epochs``: 3; a tiny set gets more so it is seen at least ~100 times
  (``ceil(100 / rows)``, at most 25); a big one fewer, so about 25,000 examples are
  trained in all (``25000 // rows``, at least 1).
- ``batch_size``: the largest power of two not above ``rows / 500``, between 1 and 32.
- ``learning_rate_multiplier``: 1. The absolute learning rate is the multiplier times
  2e-4 for LoRA, 2e-5 for full weights.
- ``beta`` (DPO): 0.1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from portal.errors import PlatformError

AUTO = "auto"
METHODS = ("supervised", "dpo")
RANGES: dict[str, tuple[float, float, bool, type]] = {
    # name: (low, high, low is exclusive, type)
    "n_epochs": (1, 50, False, int),
    "batch_size": (1, 256, False, int),
    "learning_rate_multiplier": (0, 10, True, float),
    "beta": (0, 2, True, float),
}
SUPERVISED_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier")
DPO_KEYS = (*SUPERVISED_KEYS, "beta")
BASE_LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}
MAX_SERVED_RANK = 64
DEFAULT_ADAPTER: dict[str, Any] = {
    "type": "lora",
    "r": 8,
    "alpha": 16,
    "dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
}
MAX_TARGET_MODULES = 32
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")
SUFFIX = re.compile(r"^[a-z0-9-]{1,64}$")
MAX_METADATA = 16


@dataclass
class Settings:
    """What a create request asks for, checked (``auto`` still unresolved)."""

    method: str = "supervised"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    adapter: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ADAPTER))


def invalid(message: str, param: str, code: str = "invalid_value") -> PlatformError:
    return PlatformError(message, code=code, param=param)


def parse_method(method: Any, hyperparameters: Any) -> tuple[str, dict[str, Any]]:
    """``(method type, requested hyperparameters)`` from OpenAI's ``method`` object and/or
    the deprecated top-level ``hyperparameters`` (the method's own win)."""
    requested: dict[str, Any] = {}
    kind = "supervised"
    if hyperparameters is not None:
        requested.update(_mapping(hyperparameters, "hyperparameters"))
    if method is not None:
        method = _mapping(method, "method")
        kind = method.get("type", "supervised")
        if kind not in METHODS:
            raise invalid(f"method.type must be one of {', '.join(METHODS)}.", "method.type")
        body = _mapping(method.get(kind) or {}, f"method.{kind}")
        inner = body.get("hyperparameters")
        if inner is not None:
            requested.update(_mapping(inner, f"method.{kind}.hyperparameters"))
    allowed = DPO_KEYS if kind == "dpo" else SUPERVISED_KEYS
    for name in requested:
        if name not in allowed:
            raise invalid(f"Unknown hyperparameter '{str(name)[:40]}'.", f"hyperparameters.{name}")
    return kind, {name: check_value(name, value) for name, value in requested.items()}


def _mapping(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{param}' must be an object.", param)
    return value


def check_value(name: str, value: Any) -> Any:
    """``auto`` or a number within the hyperparameter's range; else a 400."""
    if value == AUTO:
        return AUTO
    low, high, exclusive, kind = RANGES[name]
    param = f"hyperparameters.{name}"
    number = _number(value, kind, param)
    if number > high or number < low or (exclusive and number == low):
        bound = f"more than {low}" if exclusive else f"at least {low}"
        raise invalid(f"{name} must be 'auto' or {bound} and at most {high}.", param)
    return number


def _number(value: Any, kind: type, param: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"'{param}' must be 'auto' or a number.", param)
    if not math.isfinite(value):
        raise invalid(f"'{param}' must be a finite number.", param)
    if kind is int:
        if value != int(value):
            raise invalid(f"'{param}' must be a whole number.", param)
        return int(value)
    return float(value)


def parse_adapter(adapter: Any) -> dict[str, Any]:
    """The adapter: ``{"type": "full"}`` or LoRA (defaults r=8, alpha=16, dropout 0,
    q_proj and v_proj) with the given fields checked."""
    if adapter is None:
        return dict(DEFAULT_ADAPTER)
    adapter = _mapping(adapter, "adapter")
    kind = adapter.get("type", "lora")
    if kind == "full":
        if set(adapter) - {"type"}:
            raise invalid("A full fine-tune takes no adapter settings.", "adapter")
        return {"type": "full"}
    if kind != "lora":
        raise invalid("adapter.type must be 'lora' or 'full'.", "adapter.type")
    unknown = set(adapter) - {"type", "r", "alpha", "dropout", "target_modules"}
    if unknown:
        name = sorted(unknown)[0][:40]
        raise invalid(f"Unknown adapter setting '{name}'.", f"adapter.{name}")
    result = {**DEFAULT_ADAPTER, **adapter}
    # 64: the largest rank the engines load by default (``max_lora_rank``), so a finished
    # fine-tune can always be served on its base replica.
    result["r"] = _in_range(result["r"], 1, MAX_SERVED_RANK, int, "adapter.r")
    result["alpha"] = _positive(result["alpha"], "adapter.alpha")
    result["dropout"] = _dropout(result["dropout"])
    result["target_modules"] = _modules(result["target_modules"])
    return result


def _in_range(value: Any, low: int, high: int, kind: type, param: str) -> int | float:
    number = _number(value, kind, param)
    if not low <= number <= high:
        raise invalid(f"'{param}' must be from {low} to {high}.", param)
    return number


def _positive(value: Any, param: str) -> float:
    number = float(_number(value, float, param))
    if number <= 0 or number > 1e6:
        raise invalid(f"'{param}' must be more than 0.", param)
    return number


def _dropout(value: Any) -> float:
    number = float(_number(value, float, "adapter.dropout"))
    if not 0 <= number < 1:
        raise invalid("'adapter.dropout' must be at least 0 and less than 1.", "adapter.dropout")
    return number


def _modules(value: Any) -> list[str]:
    param = "adapter.target_modules"
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TARGET_MODULES:
        raise invalid(f"'{param}' must be a list of 1 to {MAX_TARGET_MODULES} names.", param)
    if not all(isinstance(name, str) and _MODULE_NAME.match(name) for name in value):
        raise invalid(f"'{param}' must hold module names such as 'q_proj'.", param)
    return list(dict.fromkeys(value))


def check_resources(gpus: Any, gpu_model: Any, priority: Any) -> tuple[int, str, int]:
    """``gpus`` 0–8, ``gpu_model`` a short name or "", ``priority`` −10..10."""
    count = int(_in_range(gpus, 0, 8, int, "gpus"))
    level = int(_in_range(priority, -10, 10, int, "priority"))
    if not isinstance(gpu_model, str) or len(gpu_model) > 100:
        raise invalid(
            "'gpu_model' must be a GPU model name of at most 100 characters.", "gpu_model"
        )
    return count, gpu_model, level


def check_suffix(suffix: Any) -> str:
    """At most 64 characters of ``a-z``, ``0-9`` and ``-`` ("" when absent)."""
    if suffix in (None, ""):
        return ""
    if not isinstance(suffix, str) or not SUFFIX.match(suffix):
        raise invalid("'suffix' must be 1 to 64 characters of a-z, 0-9 and '-'.", "suffix")
    return suffix


def check_metadata(metadata: Any) -> dict[str, str]:
    """At most 16 pairs; keys up to 64 characters, values up to 512, both strings."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA:
        raise invalid(f"'metadata' must be an object of at most {MAX_METADATA} pairs.", "metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise invalid("'metadata' keys and values must be strings.", "metadata")
        if len(key) > 64 or len(value) > 512:
            raise invalid("'metadata' keys hold at most 64 characters, values 512.", "metadata")
    return dict(metadata)


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return int(_in_range(seed, 0, 2**31 - 1, int, "seed"))


def resolve(
    method: str, requested: dict[str, Any], adapter: dict[str, Any], rows: int
) -> dict[str, Any]:
    """The hyperparameters with every ``auto`` replaced (see the module's docstring) and
    the absolute ``learning_rate``."""
    rows = max(1, rows)
    values = {
        name: requested.get(name, AUTO)
        for name in (DPO_KEYS if method == "dpo" else SUPERVISED_KEYS)
    }
    if values["n_epochs"] == AUTO:
        values["n_epochs"] = auto_epochs(rows)
    if values["batch_size"] == AUTO:
        values["batch_size"] = min(32, 2 ** max(0, int(math.log2(max(1, rows / 500)))))
    if values["learning_rate_multiplier"] == AUTO:
        values["learning_rate_multiplier"] = 1.0
    if values.get("beta") == AUTO:
        values["beta"] = 0.1
    base = BASE_LEARNING_RATE["full" if adapter.get("type") == "full" else "lora"]
    values["learning_rate"] = base * float(values["learning_rate_multiplier"])
    return values


def auto_epochs(rows: int) -> int:
    if rows * 3 < 100:
        return min(25, math.ceil(100 / rows))
    if rows * 3 > 25_000:
        return max(1, 25_000 // rows)
    return 3
