"""The loaded model behind the HTTP API: prompt encoding, token texts, sequence submission."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import torch

from compute.engines.transformers.batch import supports_cache_merging
from compute.engines.transformers.errors import ApiError, invalid_type
from compute.engines.transformers.lora import AdapterTable, ServedAdapter, read_adapter_config
from compute.engines.transformers.sampling import SamplingParams, WatermarkBias
from compute.engines.transformers.scheduler import Scheduler
from compute.engines.transformers.sequence import GenSequence
from compute.engines.transformers.text import token_bytes
from compute.engines.watermark import Watermark

if TYPE_CHECKING:
    from compute.engines.transformers.parsing import Fields


class Engine:
    """The loaded model behind the HTTP API: prompt encoding and sequence submission.

    Requests name either the base model (``served_model_name``) or a LoRA adapter loaded
    with :meth:`load_adapter`; adapter state lives on the event loop (``adapters``) and on
    the scheduler thread (``scheduler.lora``), never shared between them.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        served_model_name: str,
        max_model_len: int,
        max_batch_size: int,
        device: torch.device,
        max_loras: int = 8,
        max_lora_rank: int = 64,
        watermark: Watermark | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.created = int(time.time())
        self.scheduler = Scheduler(
            model,
            tokenizer,
            max_batch_size=max_batch_size,
            device=device,
            eos_ids=_eos_ids(model, tokenizer),
            use_cache=supports_cache_merging(model),
        )
        self._token_texts: dict[int, tuple[str, bytes]] = {}
        # Every sequence (base and adapters alike) is watermarked when the deployment is.
        self.watermark = WatermarkBias(watermark) if watermark is not None else None
        self.adapters = AdapterTable(served_model_name, max_loras, max_lora_rank)
        # One load or unload at a time: each checks the table, then awaits the scheduler.
        self._adapter_lock = asyncio.Lock()

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
    ) -> GenSequence:
        """Queue a prompt; ``adapter`` is the internal key from :meth:`check_model`."""
        loop = asyncio.get_running_loop()
        seq = GenSequence(prompt_ids, params, self.tokenizer, loop, adapter, self.watermark)
        self.scheduler.submit(seq)
        return seq

    def check_model(self, fields: Fields) -> str | None:
        """Check the request's ``model``: the base (returns ``None``) or a loaded adapter
        (returns its internal key); anything else is a 404 ``model_not_found``."""
        name = fields.required("model")
        if not isinstance(name, str):
            raise invalid_type("model", "a string", name)
        if name == self.served_model_name:
            return None
        adapter = self.adapters.served.get(name)
        if adapter is None:
            raise ApiError(
                404,
                f"The model '{name}' does not exist; "
                f"this engine serves '{self.served_model_name}'"
                + (" and its LoRA adapters." if self.adapters.served else "."),
                param="model",
                code="model_not_found",
            )
        return adapter.key

    async def load_adapter(self, name: object, path: object) -> bool:
        """Load a LoRA adapter under ``name``; False when that name and path were already
        loaded (idempotent). ApiError(400) for a bad directory, an adapter that does not
        fit the base model, a name taken by another path, or no room left.

        Shielded, like :meth:`unload_adapter`: a client that hangs up mid-way must not leave
        weights loaded under no name (or a name pointing at freed weights).
        """
        return await asyncio.shield(self._load_adapter(name, path))

    async def unload_adapter(self, name: object) -> None:
        """Stop serving adapter ``name`` (404 when it is not loaded). Requests already
        running finish with it; its weights are freed when the last one ends."""
        await asyncio.shield(self._unload_adapter(name))

    async def _load_adapter(self, name: object, path: object) -> bool:
        async with self._adapter_lock:  # each step checks the table, then awaits
            if self.adapters.check_new(name, path) is not None:
                return False
            assert isinstance(name, str) and isinstance(path, str)  # checked above
            config = await asyncio.to_thread(read_adapter_config, path, self.adapters.max_rank)
            entry = self.adapters.new_entry(name, path)
            lora = self.scheduler.lora
            await asyncio.wrap_future(
                self.scheduler.call(lambda: lora.load(entry.key, entry.path, config))
            )
            self.adapters.served[name] = entry
            return True

    async def _unload_adapter(self, name: object) -> None:
        async with self._adapter_lock:
            entry = self.adapters.served.pop(name, None) if isinstance(name, str) else None
            if entry is None:
                raise ApiError(
                    404,
                    f"The LoRA adapter '{name}' cannot be found.",
                    param="lora_name",
                    code="model_not_found",
                )
            lora = self.scheduler.lora
            await asyncio.wrap_future(self.scheduler.call(lambda: lora.retire(entry.key)))

    def served_adapters(self) -> list[ServedAdapter]:
        return list(self.adapters.served.values())

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Render messages with the chat template (generation prompt added) and tokenize."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ApiError(
                400, "This model has no chat template; use /v1/completions.", param="messages"
            )
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # Jinja errors, including raise_exception() in templates
            raise ApiError(
                400, f"The chat template rejected the messages: {exc}", param="messages"
            ) from exc
        # The template already places any special tokens it wants.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        """``(display string, raw bytes)`` of one token, as OpenAI's logprobs show tokens.

        A token holding only part of a UTF-8 character is displayed as ``bytes:\\xNN...``
        (OpenAI's convention), which also keeps such tokens distinct as dictionary keys.
        """
        cached = self._token_texts.get(token_id)
        if cached is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            raw = text.encode()
            if "\ufffd" in text:
                raw = token_bytes(self.tokenizer.convert_ids_to_tokens(token_id)) or raw
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            cached = self._token_texts[token_id] = (text, raw)
        return cached

    def completion_budget(
        self, prompt_len: int, requested: int | None, default: int | None, param: str
    ) -> int:
        """Tokens to generate, checked against the context window (400 when it cannot fit)."""
        if prompt_len == 0:
            raise ApiError(400, "The prompt is empty.", param=param)
        room = self.max_model_len - prompt_len
        if prompt_len > self.max_model_len or (requested is not None and requested > room):
            asked = prompt_len + (requested or 0)
            raise ApiError(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                f"requested {asked} tokens ({prompt_len} in the prompt, {requested or 0} for the "
                "completion). Please reduce the prompt or the completion length.",
                param=param,
                code="context_length_exceeded",
            )
        if requested is not None:
            return requested
        return room if default is None else min(default, room)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids
