"""Adapter for vLLM on GPU nodes: builds a ``vllm serve`` command line.

vLLM itself is never imported here (it is not installed on the control plane).

Accepted ``extra_args`` (declared with types, ranges and allowed values in ``SCHEMA``):

* ``dtype``, ``max_model_len``, ``gpu_memory_utilization``, ``max_num_seqs``,
  ``quantization``, ``kv_cache_dtype``, ``seed``, ``generation_config`` (``auto``/``vllm``:
  never a path), and ``enforce_eager``, ``trust_remote_code`` (only for versions an admin
  marked trusted), ``disable_log_stats``, ``enable_log_requests`` (not through the portal)
  (switches).
* Parallelism: ``tensor_parallel_size``, or else the number of GPUs given as ``gpu_ids``
  (a list, also exported as ``CUDA_VISIBLE_DEVICES``) or ``gpu_count``; default 1. The
  platform sets ``gpu_ids`` from the replica's GPU reservation; deployers cannot.
* LoRA: ``enable_lora`` turns on ``--enable-lora`` with ``--max-loras`` (``max_loras``,
  default 4) and ``--max-lora-rank`` (``max_lora_rank``, default 64, one of vLLM's allowed
  ranks); ``lora_modules`` (name -> directory relative to the model version) preloads
  adapters shipped with the model. With LoRA on, runtime adapter loading
  (``/v1/load_lora_adapter``) is enabled through the environment.

The replica's secret reaches vLLM as ``VLLM_API_KEY`` (``build_env``); a spec without one is
refused, so vLLM never serves ``/v1`` unauthenticated.

Flag names were checked against current vLLM (``vllm/engine/arg_utils.py``). Request logging
is off by default there and ``--disable-log-requests`` was removed (vLLM 0.12), so it is
never emitted; ``enable_log_requests`` opts in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

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
# vllm/model_executor/layers/quantization: QuantizationMethods (the common ones).
QUANTIZATIONS = (
    "awq", "awq_marlin", "gptq", "gptq_marlin", "gptq_marlin_24", "gptq_bitblas", "bitblas",
    "marlin", "fp8", "fbgemm_fp8", "ptpc_fp8", "modelopt", "modelopt_fp4", "mxfp4",
    "bitsandbytes", "compressed-tensors", "gguf", "experts_int8", "moe_wna16", "torchao",
    "quark", "auto-round", "inc", "hqq",
)  # fmt: skip
# vllm/config/cache.py: CacheDType
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
MAX_SEED = 2**32 - 1  # vLLM seeds numpy, which takes 0..2**32-1
MAX_GPUS = 64

OPTIONS: dict[str, Option] = {
    "dtype": Option("--dtype", str, choices=DTYPES),
    "max_model_len": Option("--max-model-len", int, minimum=1, maximum=1 << 24),
    "gpu_memory_utilization": Option(
        "--gpu-memory-utilization", float, lambda v: 0 < v <= 1, "a number in (0, 1]"
    ),
    "max_num_seqs": Option("--max-num-seqs", int, minimum=1, maximum=65536),
    "quantization": Option("--quantization", str, choices=QUANTIZATIONS),
    "kv_cache_dtype": Option("--kv-cache-dtype", str, choices=KV_CACHE_DTYPES),
    "seed": Option("--seed", int, minimum=0, maximum=MAX_SEED),
    # A path would make vLLM read any directory of the node: only the built-in sources.
    "generation_config": Option("--generation-config", str, choices=("auto", "vllm")),
    "enforce_eager": Option("--enforce-eager", bool),
    "trust_remote_code": Option("--trust-remote-code", bool, access="trusted"),
    "disable_log_stats": Option("--disable-log-stats", bool),
    # Off through the portal: prompts of everyone using a public model would land in the
    # engine log, whose tail the deployment's owner sees.
    "enable_log_requests": Option("--enable-log-requests", bool, access="reserved"),
}
PARALLEL: dict[str, Option] = {
    "tensor_parallel_size": Option(
        "", int, minimum=1, maximum=MAX_GPUS, hint="a positive integer, the GPUs per replica"
    ),
    "gpu_ids": Option("", list, hint="a list of GPU indices", access="reserved"),
    "gpu_count": Option("", int, minimum=1, maximum=MAX_GPUS, access="reserved"),
}
LORA: dict[str, Option] = {
    "enable_lora": Option("", bool),
    "max_loras": Option("", int, minimum=1, maximum=256),
    "max_lora_rank": Option("", int, choices=LORA_RANKS),
    "lora_modules": Option(
        "", dict, hint="adapter name -> directory inside the model version (relative path)"
    ),
}
SCHEMA: dict[str, Option] = {**OPTIONS, **PARALLEL, **LORA}
PARALLEL_KEYS = tuple(PARALLEL)
LORA_KEYS = tuple(LORA)


class VLLMEngine:
    """Launches ``vllm serve MODEL_DIR ...`` for one model replica."""

    name = "vllm"
    schema = SCHEMA

    def build_command(self, spec: EngineSpec) -> list[str]:
        args = check_spec(self.name, spec, SCHEMA)
        return [
            vllm_executable(spec.python), "serve", spec.model_dir,
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
            "--port", str(spec.port),
            "--tensor-parallel-size", str(tensor_parallel_size(args)),
            *render_options(self.name, args, OPTIONS),
            *lora_flags(args, spec.model_dir),
        ]  # fmt: skip

    def build_env(self, spec: EngineSpec) -> dict[str, str]:
        args = check_spec(self.name, spec, SCHEMA)
        # vLLM reads its API key from VLLM_API_KEY: /v1 answers no one without it.
        env: dict[str, str] = {"VLLM_API_KEY": spec.api_key}
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


def lora_flags(args: Mapping[str, object], model_dir: str = "") -> list[str]:
    """``--enable-lora`` and its sizing flags; LoRA sizing without ``enable_lora`` is an error."""
    enabled = checked("vllm", "enable_lora", args.get("enable_lora", False), Option("", bool))
    if not enabled:
        stray = [k for k in LORA_KEYS if k != "enable_lora" and k in args]
        if stray:
            raise EngineArgError(f"vllm engine: {', '.join(stray)} need enable_lora=True")
        return []
    max_loras = checked(
        "vllm", "max_loras", args.get("max_loras", DEFAULT_MAX_LORAS), LORA["max_loras"]
    )
    rank = checked(
        "vllm", "max_lora_rank", args.get("max_lora_rank", DEFAULT_MAX_LORA_RANK),
        LORA["max_lora_rank"],
    )  # fmt: skip
    flags = ["--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(rank)]
    modules = lora_module_paths(args.get("lora_modules"))
    if modules:
        root = PurePosixPath(model_dir)
        flags += ["--lora-modules", *(f"{name}={root / path}" for name, path in modules.items())]
    return flags


def lora_module_paths(value: object) -> dict[str, str]:
    """``lora_modules`` as adapter name -> path relative to the model directory. Absolute
    paths and ``..`` are refused: an adapter is part of the model version, not any file of
    the node."""
    if value is None or value == {}:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise EngineArgError("vllm engine: lora_modules must map adapter names to paths")
    paths: dict[str, str] = {}
    for name, raw in value.items():
        path = PurePosixPath(raw)
        if path.is_absolute() or ".." in path.parts or "\\" in raw or "=" in name:
            raise EngineArgError(
                f"vllm engine: lora_modules[{name!r}]={raw!r} must be a relative path inside "
                "the model version"
            )
        paths[name] = str(path)
    return paths
