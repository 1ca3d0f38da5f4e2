"""The loaded model behind the HTTP API: prompt encoding, token texts, sequence submission."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import torch

from compute.engines.transformers.batch import supports_cache_merging
from compute.engines.transformers.errors import ApiError, invalid_type
from compute.engines.transformers.sampling import SamplingParams
from compute.engines.transformers.scheduler import Scheduler
from compute.engines.transformers.sequence import GenSequence
from compute.engines.transformers.text import token_bytes

if TYPE_CHECKING:
    from compute.engines.transformers.parsing import Fields


class Engine:
    """The loaded model behind the HTTP API: prompt encoding and sequence submission."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        served_model_name: str,
        max_model_len: int,
        max_batch_size: int,
        device: torch.device,
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

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenSequence:
        seq = GenSequence(prompt_ids, params, self.tokenizer, asyncio.get_running_loop())
        self.scheduler.submit(seq)
        return seq

    def check_model(self, fields: Fields) -> None:
        name = fields.required("model")
        if not isinstance(name, str):
            raise invalid_type("model", "a string", name)
        if name != self.served_model_name:
            raise ApiError(
                404,
                f"The model '{name}' does not exist; "
                f"this engine serves '{self.served_model_name}'.",
                param="model",
                code="model_not_found",
            )

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
