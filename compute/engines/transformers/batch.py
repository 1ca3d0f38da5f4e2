"""Batched model execution: left padding and the running batch's merged KV cache."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from compute.engines.transformers.lora import LoraModel
from compute.engines.transformers.sequence import GenSequence


def _left_pad(
    rows: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows into ``(input_ids, attention_mask)``, both ``(B, T)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding: each row counts from 0 at its first token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _pad_seq_left(t: torch.Tensor, n: int) -> torch.Tensor:
    """Left-pad the sequence axis (-2 for KV tensors, -1 for masks) with ``n`` zeros."""
    if n == 0:
        return t
    if t.dim() == 2:
        return F.pad(t, (n, 0))
    return F.pad(t, (0, 0, n, 0))


def cache_layers(cache: Any) -> list[Any]:
    return list(cache.layers)


def supports_cache_merging(model: Any) -> bool:
    """Whether the model's KV cache is plain per-layer key/value tensors we can pad and merge.

    Models with recurrent or linear-attention layers keep other state; they are served in
    recompute mode instead (full forward of every sequence at every step).
    """
    layer_types = getattr(model.config.get_text_config(), "layer_types", None) or []
    return all(t in ("full_attention", "sliding_attention") for t in layer_types)


class ActiveBatch:
    """The running sequences and, in cache mode, their shared left-padded KV cache.

    Invariant (cache mode): row ``i`` of ``cache``/``mask``/``next_pos``/``next_tokens``
    belongs to ``seqs[i]``; ``mask`` marks real (1) versus padding (0) cache slots, and
    padding slots hold zeros. Each forward pass names every row's LoRA adapter (``model``
    is a :class:`LoraModel`), so rows of different adapters share the batch and its cache.
    """

    def __init__(
        self, model: LoraModel, device: torch.device, pad_id: int, use_cache: bool
    ) -> None:
        self.model = model
        self.device = device
        self.pad_id = pad_id
        self.use_cache = use_cache
        self.seqs: list[GenSequence] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None
        self.next_tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.seqs)

    def prefill(
        self, seqs: list[GenSequence], all_logits: bool
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Run the prompts of ``seqs`` in one left-padded forward pass.

        Returns ``(logits, cache, mask)``: logits are ``(B, T, V)`` when ``all_logits``,
        else ``(B, 1, V)`` for the last position; cache is ``None`` in recompute mode.
        """
        from transformers import DynamicCache

        ids, mask = _left_pad([s.prompt_ids for s in seqs], self.pad_id, self.device)
        cache = DynamicCache() if self.use_cache else None
        out = self.model(
            [s.adapter for s in seqs],
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask),
            past_key_values=cache,
            use_cache=self.use_cache,
            logits_to_keep=0 if all_logits else 1,
        )
        if cache is not None:
            _zero_padding(cache, mask)
        return out.logits, cache, mask

    def add(
        self, seqs: list[GenSequence], cache: Any, mask: torch.Tensor, first_tokens: list[int]
    ) -> None:
        """Join prefilled sequences to the batch; ``first_tokens`` are their sampled tokens."""
        self.seqs.extend(seqs)
        if not self.use_cache:
            return
        pos = mask.sum(-1)
        tokens = torch.tensor(first_tokens, dtype=torch.long, device=self.device)
        if self.cache is None:
            self.cache, self.mask, self.next_pos, self.next_tokens = cache, mask, pos, tokens
            return
        assert self.mask is not None and self.next_pos is not None and self.next_tokens is not None
        width = max(self.mask.shape[1], mask.shape[1])
        grow_old, grow_new = width - self.mask.shape[1], width - mask.shape[1]
        for old, new in zip(cache_layers(self.cache), cache_layers(cache), strict=True):
            old.keys = torch.cat(
                [_pad_seq_left(old.keys, grow_old), _pad_seq_left(new.keys, grow_new)]
            )
            old.values = torch.cat(
                [_pad_seq_left(old.values, grow_old), _pad_seq_left(new.values, grow_new)]
            )
        self.mask = torch.cat([_pad_seq_left(self.mask, grow_old), _pad_seq_left(mask, grow_new)])
        self.next_pos = torch.cat([self.next_pos, pos])
        self.next_tokens = torch.cat([self.next_tokens, tokens])

    def decode(self) -> torch.Tensor:
        """One forward pass for every active sequence; returns next-token logits ``(B, V)``."""
        if not self.use_cache:
            rows = [s.prompt_ids + s.output_ids for s in self.seqs]
            ids, mask = _left_pad(rows, self.pad_id, self.device)
            out = self.model(
                self.adapters(),
                input_ids=ids,
                attention_mask=mask,
                position_ids=_positions(mask),
                use_cache=False,
                logits_to_keep=1,
            )
            return out.logits[:, -1]
        assert self.mask is not None and self.next_pos is not None and self.next_tokens is not None
        ones = torch.ones((len(self.seqs), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.model(
            self.adapters(),
            input_ids=self.next_tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_pos[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.next_pos = self.next_pos + 1
        return out.logits[:, -1]

    def adapters(self) -> list[str | None]:
        """Each row's adapter key (``None``: the base model)."""
        return [s.adapter for s in self.seqs]

    def set_next_tokens(self, tokens: list[int]) -> None:
        if self.use_cache:
            self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device)

    def keep(self, rows: list[int]) -> None:
        """Keep only the given rows (in order); trims cache columns that became all padding."""
        self.seqs = [self.seqs[i] for i in rows]
        if not self.use_cache or self.mask is None:
            return
        if not rows:
            self.cache = self.mask = self.next_pos = self.next_tokens = None
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        assert self.next_pos is not None and self.next_tokens is not None
        self.mask = self.mask[index]
        self.next_pos, self.next_tokens = self.next_pos[index], self.next_tokens[index]
        # Columns where every remaining row is padding are dead weight in each step.
        start = int(self.mask.any(0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in cache_layers(self.cache):
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]


def _zero_padding(cache: Any, mask: torch.Tensor) -> None:
    """Overwrite padding slots with zeros so no NaN from a fully-masked row can leak later."""
    keep = mask.bool()[:, None, :, None]
    for layer in cache_layers(cache):
        layer.keys = torch.where(keep, layer.keys, 0.0)
        layer.values = torch.where(keep, layer.values, 0.0)
