"""Adapter for the built-in CPU engine (:mod:`compute.engines.transformers`).

Accepted ``extra_args``: ``max_model_len``, ``max_batch_size``, ``dtype`` (``auto``,
``float32``, ``bfloat16``, ``float16``; vLLM's ``float``/``half`` aliases are mapped),
``device`` (``cpu``/``cuda``), ``num_threads``. GPU-only options are accepted only at values
that mean "off" (``tensor_parallel_size=1``, ``gpu_count=0``, ``gpu_ids=[]``,
``enable_lora=False``), so a spec written for vLLM fails loudly instead of being half-honoured.
"""

from __future__ import annotations

from typing import Any

from compute.engines.base import (
    EngineArgError,
    EngineSpec,
    Option,
    check_spec,
    positive,
    render_options,
)

SERVER_MODULE = "compute.engines.transformers_server"  # thin entry that runs the package's main
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {"float": "float32", "half": "float16"}

OPTIONS: dict[str, Option] = {
    "max_model_len": Option("--max-model-len", int, positive, "a positive integer"),
    "max_batch_size": Option("--max-batch-size", int, positive, "a positive integer"),
    "dtype": Option("--dtype", str, lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "device": Option("--device", str, lambda v: v in ("cpu", "cuda"), "'cpu' or 'cuda'"),
    "num_threads": Option("--num-threads", int, lambda v: v >= 0, "an integer >= 0"),
}
# GPU-engine options and the value at which they ask for nothing.
NEUTRAL: dict[str, Any] = {
    "tensor_parallel_size": 1,
    "gpu_count": 0,
    "gpu_ids": [],
    "enable_lora": False,
}


class TransformersEngine:
    """Launches ``python -m compute.engines.transformers_server`` for one model."""

    name = "transformers"

    def build_command(self, spec: EngineSpec) -> list[str]:
        args = check_spec(self.name, spec, [*OPTIONS, *NEUTRAL])
        for key, neutral in NEUTRAL.items():
            value = args.pop(key, neutral)
            if not _is_neutral(value, neutral):
                raise EngineArgError(f"transformers engine does not support {key}={value!r}")
        if isinstance(args.get("dtype"), str):
            args["dtype"] = DTYPE_ALIASES.get(str(args["dtype"]), args["dtype"])
        return [
            spec.python, "-m", SERVER_MODULE,
            "--model", spec.model_dir,
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
            "--port", str(spec.port),
            *render_options(self.name, args, OPTIONS),
        ]  # fmt: skip

    def build_env(self, spec: EngineSpec) -> dict[str, str]:
        # The server only reads the local directory; never let a miss turn into a Hub call.
        return {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _is_neutral(value: object, neutral: object) -> bool:
    """Whether a GPU option's value asks for nothing (any empty list for ``gpu_ids``)."""
    if isinstance(neutral, list):
        return isinstance(value, list | tuple) and not value
    return type(value) is type(neutral) and value == neutral
