"""Model-serving engines: a typed registry of launch adapters.

``ENGINES`` maps an engine name to the ``"module:attr"`` of its adapter class; the module is
imported only when the engine is asked for, so listing engines never imports torch or vLLM.

>>> get_engine("vllm").build_command(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

from compute.engines.base import EngineAdapter, EngineArgError, EngineSpec, closest

__all__ = [
    "ENGINES",
    "EngineAdapter",
    "EngineArgError",
    "EngineSpec",
    "UnknownEngineError",
    "engine_names",
    "get_engine",
]

ENGINES: dict[str, str] = {
    "transformers": "compute.engines.transformers_adapter:TransformersEngine",
    "vllm": "compute.engines.vllm:VLLMEngine",
}


class UnknownEngineError(LookupError):
    """Raised by :func:`get_engine` for a name that is not in ``ENGINES``."""


def engine_names() -> list[str]:
    return sorted(ENGINES)


def get_engine(name: str) -> EngineAdapter:
    """Instantiate the adapter registered under ``name``.

    Raises :class:`UnknownEngineError` naming the known engines, with a did-you-mean hint
    when ``name`` is close to one of them.
    """
    target = ENGINES.get(name)
    if target is None:
        raise UnknownEngineError(
            f"Unknown engine {name!r}.{closest(name, ENGINES)} "
            f"Known engines: {', '.join(engine_names())}."
        )
    module_name, _, attr = target.partition(":")
    adapter = getattr(importlib.import_module(module_name), attr)()
    return adapter
