"""What a host offers: CPUs, memory and, where NVML answers, its GPUs."""

from __future__ import annotations

import importlib.util
import os
import socket
from typing import Any

import psutil


def detect_gpus() -> list[dict[str, Any]]:
    """GPUs seen by NVML (``nvidia-ml-py``); empty when it is absent or finds none."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "index": index,
                    "name": _text(name),
                    "uuid": _text(uuid),
                    "memory_bytes": int(memory.total),
                }
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# What the fine-tuning runner (``training.runner``) imports: with all of them a node can
# take CPU workloads (the portal places those only on nodes offering "trainer").
TRAINER_DEPENDENCIES = ("torch", "transformers", "peft")


def detect_engines(gpus: list[dict[str, Any]]) -> list[str]:
    """What this node can run: engines by name, and ``"trainer"`` for workloads. Found
    with ``find_spec`` (nothing heavy is imported into the agent)."""
    engines = ["transformers"]
    if gpus and importlib.util.find_spec("vllm") is not None:
        engines.append("vllm")
    if all(importlib.util.find_spec(name) is not None for name in TRAINER_DEPENDENCIES):
        engines.append("trainer")
    return engines


def inventory(address: str, engines: list[str] | None, version: str) -> dict[str, Any]:
    gpus = detect_gpus()
    return {
        "hostname": socket.gethostname(),
        "address": address,
        "cpu_count": os.cpu_count() or 1,
        "memory_bytes": psutil.virtual_memory().total,
        "gpus": gpus,
        "engines": engines or detect_engines(gpus),
        "agent_version": version,
    }
