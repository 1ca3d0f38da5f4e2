"""Adapter for the built-in CPU engine (:mod:`compute.engines.transformers`).

Accepted ``extra_args``: ``max_model_len``, ``max_batch_size``, ``dtype`` (``auto``,
``float32``, ``bfloat16``, ``float16``; vLLM's ``float``/``half`` aliases are mapped),
``device`` (``cpu``/``cuda``), ``num_threads``. GPU-only options are accepted only at values
that mean "off" (``tensor_parallel_size=1``, ``gpu_count=0``, ``gpu_ids=[]``), so a spec
written for vLLM fails loudly instead of being half-honoured.

LoRA: the engine serves runtime-loaded adapters (``/v1/load_lora_adapter``) by default, at
most ``max_loras`` (default 8) of rank up to ``max_lora_rank`` (default 64, vLLM's allowed
ranks, so an adapter one engine takes the other takes too). Nothing is reserved until an
adapter loads, unlike vLLM, hence on by default; ``enable_lora=False`` turns it off
(``--max-loras 0``). The names match vLLM's, so ``engine=auto`` accepts the same LoRA args.

Watermark (off by default): ``watermark=True`` plants the green-list text watermark of
:mod:`compute.engines.watermark` in every token sampled, with ``watermark_gamma`` (green
fraction, default 0.25) and ``watermark_delta`` (logit bias, default 2.0), which need
``watermark=True``. Its key is the deployment's secret (``EngineSpec.watermark_key``); it
reaches the engine as ``OPENMAAS_WATERMARK_KEY`` in the environment, never in argv.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from compute.engines.base import (
    EngineArgError,
    EngineSpec,
    Option,
    check_spec,
    checked,
    render_options,
)
from compute.engines.vllm import LORA_RANKS
from compute.engines.watermark import KEY_ENV as WATERMARK_KEY_ENV
from compute.engines.watermark import MAX_DELTA, MAX_GAMMA, MIN_GAMMA

SERVER_MODULE = "compute.engines.transformers_server"  # thin entry that runs the package's main
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {"float": "float32", "half": "float16"}

OPTIONS: dict[str, Option] = {
    "max_model_len": Option("--max-model-len", int, minimum=1, maximum=1 << 20),
    "max_batch_size": Option("--max-batch-size", int, minimum=1, maximum=256),
    "dtype": Option("--dtype", str, choices=(*DTYPES, *DTYPE_ALIASES)),
    "device": Option("--device", str, choices=("cpu", "cuda")),
    "num_threads": Option("--num-threads", int, minimum=0, maximum=1024),
    "max_loras": Option("--max-loras", int, minimum=1, maximum=256),
    "max_lora_rank": Option("--max-lora-rank", int, choices=LORA_RANKS),
    "watermark": Option("--watermark", bool),
    "watermark_gamma": Option("--watermark-gamma", float, minimum=MIN_GAMMA, maximum=MAX_GAMMA),
    "watermark_delta": Option(
        "--watermark-delta", float, lambda v: 0 < v <= MAX_DELTA, f"a number in (0, {MAX_DELTA}]"
    ),
}
WATERMARK_TUNING = ("watermark_gamma", "watermark_delta")
# GPU-engine options and the value at which they ask for nothing.
NEUTRAL: dict[str, Any] = {
    "tensor_parallel_size": 1,
    "gpu_count": 0,
    "gpu_ids": [],
}
SCHEMA: dict[str, Option] = {
    **OPTIONS,
    "tensor_parallel_size": Option("", int, choices=(1,), hint="1 (no tensor parallelism)"),
    "gpu_count": Option("", int, choices=(0,), access="reserved"),
    "gpu_ids": Option("", list, hint="an empty list", access="reserved"),
    "enable_lora": Option("", bool),
}
API_KEY_ENV = "OPENMAAS_ENGINE_API_KEY"  # compute.engines.transformers.api reads it


def api_key_from_env() -> str | None:
    """The replica's secret from the environment; None (after saying why on stderr) when
    it is empty: without it ``/v1`` would answer anyone who reaches the port."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        print(
            f"error: {API_KEY_ENV} is empty or not set; the engine never serves without an "
            "API key (the node agent sets it to the replica's secret)",
            file=sys.stderr,
        )
        return None
    return key


class TransformersEngine:
    """Launches ``python -m compute.engines.transformers_server`` for one model."""

    name = "transformers"
    schema = SCHEMA

    def build_command(self, spec: EngineSpec) -> list[str]:
        args = check_spec(self.name, spec, SCHEMA)
        for key, neutral in NEUTRAL.items():
            value = args.pop(key, neutral)
            if not _is_neutral(value, neutral):
                raise EngineArgError(f"transformers engine does not support {key}={value!r}")
        if isinstance(args.get("dtype"), str):
            args["dtype"] = DTYPE_ALIASES.get(str(args["dtype"]), args["dtype"])
        lora_off = not checked(self.name, "enable_lora", args.pop("enable_lora", True),
                               SCHEMA["enable_lora"])  # fmt: skip
        if lora_off:
            stray = [k for k in ("max_loras", "max_lora_rank") if k in args]
            if stray:
                raise EngineArgError(
                    f"transformers engine: {', '.join(stray)} need enable_lora=True"
                )
        _check_watermark(spec, args)
        return [
            spec.python, "-m", SERVER_MODULE,
            "--model", spec.model_dir,
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
            "--port", str(spec.port),
            *render_options(self.name, args, OPTIONS),
            *(["--max-loras", "0"] if lora_off else []),
        ]  # fmt: skip

    def build_env(self, spec: EngineSpec) -> dict[str, str]:
        args = check_spec(self.name, spec, SCHEMA)
        # The server only reads the local directory; never let a miss turn into a Hub call.
        # Its API key comes through the environment (not argv: ps shows argv).
        env = {
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            API_KEY_ENV: spec.api_key,
        }
        if _check_watermark(spec, args):
            env[WATERMARK_KEY_ENV] = spec.watermark_key
        return env


def _check_watermark(spec: EngineSpec, args: dict[str, object]) -> bool:
    """Whether the watermark is on; EngineArgError for tuning without it, or no key."""
    on = checked("transformers", "watermark", args.get("watermark", False), SCHEMA["watermark"])
    if not on:
        stray = [k for k in WATERMARK_TUNING if k in args]
        if stray:
            raise EngineArgError(f"transformers engine: {', '.join(stray)} need watermark=True")
        return False
    if not spec.watermark_key:
        raise EngineArgError("transformers engine: watermark=True but no watermark key was given")
    return True


def _is_neutral(value: object, neutral: object) -> bool:
    """Whether a GPU option's value asks for nothing (any empty list for ``gpu_ids``)."""
    if isinstance(neutral, list):
        return isinstance(value, list | tuple) and not value
    return type(value) is type(neutral) and value == neutral
