"""LoRA adapters served next to the base model (multi-LoRA).

Two halves, one per thread:

* :class:`AdapterTable` (event-loop thread): the public names requests may use, each mapped
  to an internal peft key. Handlers validate an adapter directory (:func:`read_adapter_config`)
  before anything touches the model.
* :class:`LoraModel` (scheduler thread): the model as the scheduler runs it. The base model is
  wrapped in a ``PeftModel`` when the first adapter loads; every forward pass then names the
  adapter of each batch row (``adapter_names``, ``"__base__"`` for the base), so requests for
  different adapters and for the base share one batch and one KV cache. A row's adapter never
  changes, so cached decoding stays exact: the base rows compute exactly what the bare model
  computes (peft adds no LoRA term for them).

Internal keys (``lora0``, ``lora1``...) stand in for public names: peft keys end up as module
names, which may not contain the ``.`` or ``/`` of names like ``ft:acme/qwen2.5:...``, and a
name unloaded while requests still use it can be loaded again from another path at once (the
old key retires when its last request ends).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compute.engines.transformers.errors import ApiError

BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed batch
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"  # never pickles (adapter_model.bin)
MAX_NAME_LENGTH = 512


def bad_adapter(message: str, param: str = "lora_path") -> ApiError:
    return ApiError(400, message, param=param, code="invalid_lora_adapter")


@dataclass(frozen=True)
class ServedAdapter:
    """One public adapter name: where it was loaded from and its internal peft key."""

    name: str
    path: str
    key: str
    created: int


def read_adapter_config(path: str, max_rank: int) -> Any:
    """The ``LoraConfig`` of an adapter directory, or ApiError(400) for anything this engine
    cannot serve exactly: not a LoRA, DoRA (peft cannot mix it in a batch), a rank over
    ``max_rank``, or options that would change the base model (trained biases, layer
    replication, weight-modifying initialisations)."""
    from peft import LoraConfig, PeftType

    root = Path(path)
    if not root.is_absolute():
        raise bad_adapter(f"lora_path must be an absolute directory, got '{path}'.")
    if not (root / CONFIG_FILE).is_file() or not (root / WEIGHTS_FILE).is_file():
        raise bad_adapter(f"'{path}' is not a LoRA adapter directory ({CONFIG_FILE} and "
                          f"{WEIGHTS_FILE} are required).")  # fmt: skip
    try:
        raw = json.loads((root / CONFIG_FILE).read_text())
        peft_type = raw.get("peft_type") if isinstance(raw, dict) else None
        if peft_type != PeftType.LORA.value:
            raise bad_adapter(f"'{path}' holds a {peft_type or 'non-peft'} adapter; only LoRA.")
        config = LoraConfig.from_pretrained(str(root))
    except (OSError, ValueError, TypeError) as exc:
        raise bad_adapter(f"'{path}': unreadable adapter config: {exc}") from exc
    ranks = [config.r, *(config.rank_pattern or {}).values()]
    if max(ranks) > max_rank:
        raise bad_adapter(f"The adapter's rank {max(ranks)} exceeds this engine's "
                          f"max_lora_rank of {max_rank}.")  # fmt: skip
    unsupported = {
        "use_dora": bool(config.use_dora),
        "bias": config.bias != "none",
        "layer_replication": bool(config.layer_replication),
        "target_parameters": bool(getattr(config, "target_parameters", None)),
        "alora_invocation_tokens": bool(getattr(config, "alora_invocation_tokens", None)),
        "trainable_token_indices": bool(getattr(config, "trainable_token_indices", None)),
    }
    used = [name for name, on in unsupported.items() if on]
    if used:
        raise bad_adapter(f"'{path}' uses {', '.join(used)}, which this engine cannot serve.")
    # Loaded weights replace the initial ones; PiSSA/OLoRA/LoftQ-style initialisation would
    # first rewrite the base weights every other request shares.
    config.init_lora_weights = True
    config.inference_mode = True
    return config


class AdapterTable:
    """Public adapter names of one engine (event-loop thread only)."""

    def __init__(self, base_name: str, max_loras: int, max_rank: int) -> None:
        self.base_name = base_name
        self.max_loras = max_loras
        self.max_rank = max_rank
        self.served: dict[str, ServedAdapter] = {}
        self._keys = (f"lora{i}" for i in itertools.count())

    def check_new(self, name: object, path: object) -> ServedAdapter | None:
        """Validate a load request: the already served entry when it is the same name and
        path (loading is idempotent), ``None`` when it is new; ApiError(400) otherwise."""
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise bad_adapter("lora_name must be a non-empty string.", "lora_name")
        if not isinstance(path, str) or not path:
            raise bad_adapter("lora_path must be a non-empty string.")
        if name == self.base_name:
            raise bad_adapter(f"'{name}' is the base model's name.", "lora_name")
        current = self.served.get(name)
        if current is not None:
            if current.path == str(Path(path).resolve()):
                return current
            raise bad_adapter(
                f"The LoRA adapter '{name}' has already been loaded from another path; "
                "unload it first.",
                "lora_name",
            )
        if self.max_loras == 0:
            raise bad_adapter("LoRA adapters are disabled on this engine.", "lora_name")
        if len(self.served) >= self.max_loras:
            raise bad_adapter(
                f"This engine already serves its maximum of {self.max_loras} LoRA adapters; "
                "unload one first.",
                "lora_name",
            )
        return None

    def new_entry(self, name: str, path: str) -> ServedAdapter:
        return ServedAdapter(name, str(Path(path).resolve()), next(self._keys), int(time.time()))


class LoraModel:
    """The model the scheduler runs, with its loaded adapters (scheduler thread only)."""

    def __init__(self, base: Any, device: torch.device) -> None:
        self.base = base
        self.device = device
        self.peft: Any = None
        self.retiring: set[str] = set()

    @property
    def keys(self) -> set[str]:
        return set(self.peft.peft_config) if self.peft is not None else set()

    def __call__(self, adapters: list[str | None], **kwargs: Any) -> Any:
        """One forward pass; ``adapters[i]`` is row ``i``'s adapter key (``None``: base)."""
        if self.peft is None or not self.peft.peft_config:
            # No adapter left: the LoRA layers that stay in place add nothing.
            return self.base(**kwargs)
        first = adapters[0] if adapters else None
        if first is not None and all(key == first for key in adapters):
            # One adapter for every row: peft's plain path skips the per-layer gather and
            # scatter of mixed batches (measured ~20% faster per step); same arithmetic.
            if self.peft.active_adapter != first:
                self.peft.set_adapter(first, inference_mode=True)
            return self.peft(**kwargs)
        names = [key or BASE_ROW for key in adapters]
        return self.peft(**kwargs, adapter_names=names)

    def load(self, key: str, path: str, config: Any) -> None:
        """Add adapter ``key`` from ``path`` without touching the base weights; on failure
        nothing of it stays loaded (ApiError 400: the adapter does not fit this model)."""
        from peft import PeftModelForCausalLM

        # Plain tensors (not inference tensors): peft copies the loaded weights in place.
        with torch.inference_mode(False), torch.no_grad():
            try:
                if self.peft is None:
                    self.peft = PeftModelForCausalLM(
                        self.base, config, key, autocast_adapter_dtype=False
                    )
                else:
                    self.peft.add_adapter(key, config)
                result = self.peft.load_adapter(
                    path, key, torch_device=str(self.device), autocast_adapter_dtype=False
                )
                stray = [k for k in result.unexpected_keys if ".lora_" in k]
                if result.missing_keys or stray:
                    raise ValueError(f"weights do not match the model: "
                                     f"{(result.missing_keys or stray)[:3]}")  # fmt: skip
            except Exception as exc:
                if self.peft is not None and key in self.peft.peft_config:
                    self.peft.delete_adapter(key)
                message = f"The adapter at '{path}' does not fit this model: {exc}"
                raise bad_adapter(message) from exc
            if self.peft.active_adapter not in self.peft.peft_config:
                # peft reads the active adapter's config on every forward pass.
                self.peft.set_adapter(key, inference_mode=True)
            self.peft.eval()  # new LoRA modules start in training mode (dropout on)

    def retire(self, key: str) -> None:
        """Delete ``key`` once no sequence uses it (see :meth:`collect`)."""
        if key in self.keys:
            self.retiring.add(key)

    def collect(self, in_use: set[str | None]) -> None:
        """Delete retiring adapters that no running or waiting sequence uses any more."""
        for key in sorted(self.retiring - in_use):
            self.retiring.discard(key)
            with torch.inference_mode(False), torch.no_grad():
                self.peft.delete_adapter(key)
