"""Engine arguments are checked by the portal, at deploy time, against the engine's schema.

A bad argument must be a 400 here, not a replica crash-looping on a node; an unsafe one
(reading arbitrary paths of a third-party node, running a model's own code) must never
reach a node at all. Each engine declares its schema (``compute.engines``: ``schema`` of
the adapter; names, types, ranges, allowed values and who may set each).

``engine=auto`` resolves per node (vLLM on GPU nodes, transformers elsewhere), so its
arguments must be valid for **both** engines: options only one engine knows need that
engine named explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compute.engines import EngineArgError, get_engine
from compute.engines.base import validate_args
from compute.engines.vllm import lora_module_paths
from compute.models import Engine
from portal.errors import PlatformError
from portal.models import ModelVersion

MAX_ARGS = 32
WATERMARK_ARGS = ("watermark", "watermark_gamma", "watermark_delta")


def engines_for(engine: str) -> list[str]:
    """The engines a deployment of ``engine`` can run as on some node."""
    return [Engine.TRANSFORMERS, Engine.VLLM] if engine == Engine.AUTO else [engine]


def _bad(message: str) -> PlatformError:
    return PlatformError(message, param="engine_args")


def check_engine_args(engine: str, args: Any, version: ModelVersion, gpus_per_replica: int) -> int:
    """Raise a 400 unless ``args`` may start ``engine`` for ``version``; return the GPUs
    per replica to reserve (``tensor_parallel_size`` sets it when it was left at 0)."""
    if not isinstance(args, Mapping) or len(args) > MAX_ARGS:
        raise _bad(f"engine_args must be an object of at most {MAX_ARGS} options.")
    _check_watermark_engine(engine, args)
    for name in engines_for(engine):
        _check_for(name, engine, args, version)
    _check_lora_paths(args, version)
    _check_context_length(engine, args, version)
    return _gpus(engine, args, gpus_per_replica)


def _check_for(name: str, engine: str, args: Mapping[str, Any], version: ModelVersion) -> None:
    adapter = get_engine(name)
    for key, value in args.items():
        option = adapter.schema.get(key)
        if option is None:
            hint = " (engine=auto runs either engine: name one)" if engine == Engine.AUTO else ""
            raise _bad(
                f"The {name} engine has no option '{key}'{hint}. "
                f"Known options: {', '.join(sorted(adapter.schema))}."
            )
        if option.access == "reserved":
            raise _bad(f"'{key}' is set by the platform, not by a deployment.")
        if option.access == "trusted" and value not in (False, None) and not version.trusted:
            raise _bad(
                f"'{key}' runs the model's own code on the node: only for model versions an "
                "administrator marked trusted."
            )
    try:
        validate_args(adapter, args)
    except EngineArgError as exc:
        raise _bad(str(exc)) from None


def _check_watermark_engine(engine: str, args: Mapping[str, Any]) -> None:
    """The watermark needs a logits processor: the transformers engine has one, vLLM (as
    the platform runs it) none, so ``auto`` (vLLM on GPU nodes) cannot promise it either."""
    named = [key for key in WATERMARK_ARGS if key in args]
    if named and Engine.VLLM in engines_for(engine):
        raise _bad(
            f"'{named[0]}': the text watermark needs engine='transformers'; the vLLM engine "
            "has no logits processor for it here."
        )


def _check_lora_paths(args: Mapping[str, Any], version: ModelVersion) -> None:
    """Each ``lora_modules`` path must be a directory of the model version's own files."""
    try:
        paths = lora_module_paths(args.get("lora_modules"))
    except EngineArgError as exc:
        raise _bad(str(exc)) from None
    files = list(version.files.values_list("path", flat=True))
    for name, path in paths.items():
        prefix = path.rstrip("/") + "/"
        if not any(f.startswith(prefix) for f in files):
            raise _bad(f"lora_modules['{name}']: the model version has no directory '{path}'.")


def _check_context_length(engine: str, args: Mapping[str, Any], version: ModelVersion) -> None:
    """vLLM refuses to start with ``max_model_len`` past the model's positions."""
    wanted = args.get("max_model_len")
    if Engine.VLLM not in engines_for(engine) or not isinstance(wanted, int):
        return
    config: dict[str, Any] = version.config if isinstance(version.config, dict) else {}
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    limit = text.get("max_position_embeddings")
    if isinstance(limit, int) and limit > 0 and not text.get("rope_scaling") and wanted > limit:
        raise _bad(f"max_model_len={wanted} exceeds the model's {limit} positions.")


def _gpus(engine: str, args: Mapping[str, Any], gpus_per_replica: int) -> int:
    tp = args.get("tensor_parallel_size")
    if isinstance(tp, int) and tp > 1:
        if gpus_per_replica not in (0, tp):
            raise _bad("tensor_parallel_size must equal gpus_per_replica.")
        return tp
    if engine == Engine.TRANSFORMERS and gpus_per_replica and args.get("device") != "cuda":
        raise PlatformError(
            "The transformers engine on CPU uses no GPUs: set engine_args.device to 'cuda' "
            "or gpus_per_replica to 0.",
            param="gpus_per_replica",
        )
    return gpus_per_replica
