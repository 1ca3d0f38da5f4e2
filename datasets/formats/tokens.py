"""Token counting with a model's ``tokenizer.json`` through the `tokenizers` library
(never `transformers`: it is too heavy for web and Celery processes)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class TokenCounter:
    """Counts tokens of texts; knows the tokenizer's special tokens (forbidden in data)
    and the model's context length (``None``: no limit is checked)."""

    def __init__(self, tokenizer: Tokenizer, context_length: int | None) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.special_tokens = frozenset(
            added.content
            for added in tokenizer.get_added_tokens_decoder().values()
            if added.special and added.content
        )

    @classmethod
    def from_file(cls, tokenizer_json: Path, context_length: int | None) -> TokenCounter:
        """Loads a Hugging Face ``tokenizer.json``; raises `Exception` from `tokenizers`
        when the file is not a tokenizer."""
        return cls(Tokenizer.from_file(str(tokenizer_json)), context_length)

    def count(self, text: str) -> int:
        """Tokens of ``text`` without the special tokens a post-processor would add."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_batch(self, texts: list[str]) -> list[int]:
        """`count` for many texts at once (the tokenizer works in parallel in Rust)."""
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]
