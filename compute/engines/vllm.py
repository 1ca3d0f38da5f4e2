"""Adapter for vLLM on GPU nodes: builds a ``vllm serve`` command line.

vLLM itself is never imported here (it is not installed on the control plane).

Accepted ``extra_args``:

* ``dtype``, ``max_model_len``, ``gpu_memory_utilization``, ``max_num_seqs``,
  ``quantization``, ``kv_cache_dtype``, ``seed``, ``generation_config`` (values), and
  ``enforce_eager``, ``trust_remote_code``, ``disable_log_stats``, ``enable_log_requests``
  (switches).
* Parallelism: ``tensor_parallel_size``, or else the number of GPUs given as ``gpu_ids``
  (a list, also exported as ``CUDA_VISIBLE_DEVICES``) or ``gpu_count``; default 1.
* LoRA: ``enable_lora`` turns on ``--enable-lora`` with ``--max-loras`` (``max_loras``,
  default 4) and ``--max-lora-rank`` (``max_lora_rank``, default 64, one of vLLM's allowed
  ranks); ``lora_modules`` (name -> path) preloads adapters. With LoRA on, runtime adapter
  loading (``/v1/load_lora_adapter``) is enabled through the environment.

Flag names were checked against current vLLM (``vllm/engine/arg_utils.py``). Request logging
is off by default there and ``--disable-log-requests`` was removed (vLLM 0.12), so it is
never emitted; ``enable_log_requests`` opts in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from compute.engines.base import (
    EngineArgError,
    EngineSpec,
    Option,
    check_spec,
    checked,
    positive,
    render_options,
)

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# vllm/config/lora.py: MaxLoRARanks
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_MAX_LORAS = 4
DEFAULT_MAX_LORA_RANK = 64

OPTIONS: dict[str, Option] = {
    "dtype": Option("--dtype", str, lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "max_model_len": Option("--max-model-len", int, positive, "a positive integer"),
    "gpu_memory_utilization": Option(
        "--gpu-memory-utilization", float, lambda v: 0 < v <= 1, "a number in (0, 1]"
    ),
    "max_num_seqs": Option("--max-num-seqs", int, positive, "a positive integer"),
    "quantization": Option("--quantization", str),
    "kv_cache_dtype": Option("--kv-cache-dtype", str),
    "seed": Option("--seed", int),
    "generation_config": Option("--generation-config", str),
    "enforce_eager": Option("--enforce-eager", bool),
    "trust_remote_code": Option("--trust-remote-code", bool),
    "disable_log_stats": Option("--disable-log-stats", bool),
    "enable_log_requests": Option("--enable-log-requests", bool),
}
PARALLEL_KEYS = ("tensor_parallel_size", "gpu_ids", "gpu_count")
LORA_KEYS = ("enable_lora", "max_loras", "max_lora_rank", "lora_modules")


class VLLMEngine:
    """Launches ``vllm serve MODEL_DIR ...`` for one model replica."""

    name = "vllm"

    def build_command(self, spec: EngineSpec) -> list[str]:
        args = check_spec(self.name, spec, [*OPTIONS, *PARALLEL_KEYS, *LORA_KEYS])
        return [
            vllm_executable(spec.python), "serve", spec.model_dir,
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
            "--port", str(spec.port),
            "--tensor-parallel-size", str(tensor_parallel_size(args)),
            *render_options(self.name, args, OPTIONS),
            *lora_flags(args),
        ]  # fmt: skip

    def build_env(self, spec: EngineSpec) -> dict[str, str]:
        args = check_spec(self.name, spec, [*OPTIONS, *PARALLEL_KEYS, *LORA_KEYS])
        env: dict[str, str] = {}
        gpu_ids = args.get("gpu_ids")
        if gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in _gpu_ids(gpu_ids))
        if args.get("enable_lora"):
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        return env


def vllm_executable(python: str) -> str:
    """The ``vllm`` script next to ``python`` (same virtualenv) when present, else from PATH."""
    sibling = Path(python).with_name("vllm")
    return str(sibling) if os.access(sibling, os.X_OK) else "vllm"


def _gpu_ids(value: object) -> list[int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise EngineArgError(
            f"vllm engine: gpu_ids={value!r} is invalid; expected a list of integers"
        )
    for item in value:
        checked("vllm", "gpu_ids", item, Option("", int, lambda v: v >= 0, "GPU indices >= 0"))
    return list(value)  # type: ignore[arg-type]


def tensor_parallel_size(args: Mapping[str, object]) -> int:
    """Explicit ``tensor_parallel_size``, else one shard per GPU given, else 1."""
    count = Option("", int, positive, "a positive integer")
    if "tensor_parallel_size" in args:
        size = int(checked("vllm", "tensor_parallel_size", args["tensor_parallel_size"], count))
        if "gpu_ids" in args and size != len(_gpu_ids(args["gpu_ids"])):
            raise EngineArgError(
                "vllm engine: tensor_parallel_size must equal the number of gpu_ids"
            )
        return size
    if "gpu_ids" in args:
        ids = _gpu_ids(args["gpu_ids"])
        if not ids:
            raise EngineArgError("vllm engine: gpu_ids is empty; vLLM needs at least one GPU")
        return len(ids)
    if "gpu_count" in args:
        return int(checked("vllm", "gpu_count", args["gpu_count"], count))
    return 1


def lora_flags(args: Mapping[str, object]) -> list[str]:
    """``--enable-lora`` and its sizing flags; LoRA sizing without ``enable_lora`` is an error."""
    enabled = checked("vllm", "enable_lora", args.get("enable_lora", False), Option("", bool))
    if not enabled:
        stray = [k for k in LORA_KEYS if k != "enable_lora" and k in args]
        if stray:
            raise EngineArgError(f"vllm engine: {', '.join(stray)} need enable_lora=True")
        return []
    max_loras = checked(
        "vllm", "max_loras", args.get("max_loras", DEFAULT_MAX_LORAS),
        Option("", int, positive, "a positive integer"),
    )  # fmt: skip
    rank = checked(
        "vllm", "max_lora_rank", args.get("max_lora_rank", DEFAULT_MAX_LORA_RANK),
        Option("", int, lambda v: v in LORA_RANKS, f"one of {LORA_RANKS}"),
    )  # fmt: skip
    flags = ["--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(rank)]
    modules = args.get("lora_modules")
    if modules:
        if not isinstance(modules, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in modules.items()
        ):
            raise EngineArgError("vllm engine: lora_modules must map adapter names to paths")
        flags += ["--lora-modules", *(f"{name}={path}" for name, path in modules.items())]
    return flags
