"""Conversion of instruction data (Alpaca, ShareGPT, prompt/completion) to chat rows:
``{"messages": [{"role", "content"}, ...]}`` plus the row's other fields."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from datasets.pipelines.base import Row, Step

Converted = dict[str, Any] | None

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function_response": "tool",
}


def _message(role: str, content: Any) -> dict[str, str] | None:
    return {"role": role, "content": content} if isinstance(content, str) else None


def from_alpaca(data: dict[str, Any]) -> Converted:
    """instruction (+ input after a blank line) → user, output → assistant, optional system."""
    instruction, extra = data.get("instruction"), data.get("input") or ""
    if not isinstance(instruction, str) or not isinstance(extra, str):
        return None
    answer = _message("assistant", data.get("output"))
    if answer is None:
        return None
    messages = [_message("system", data["system"])] if data.get("system") else []
    messages += [_message("user", f"{instruction}\n\n{extra}" if extra else instruction), answer]
    return _with_rest(data, messages, ("instruction", "input", "output", "system"))


def from_sharegpt(data: dict[str, Any]) -> Converted:
    """``conversations: [{from, value}]`` → messages (roles mapped by :data:`SHAREGPT_ROLES`)."""
    turns = data.get("conversations")
    if not isinstance(turns, list) or not turns:
        return None
    messages = [_message("system", data["system"])] if data.get("system") else []
    for turn in turns:
        role = (
            SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
            if isinstance(turn, dict)
            else None
        )
        message = _message(role, turn.get("value")) if role and isinstance(turn, dict) else None
        if message is None:
            return None
        messages.append(message)
    return _with_rest(data, messages, ("conversations", "system"))


def from_prompt_completion(data: dict[str, Any]) -> Converted:
    """prompt → user, completion → assistant."""
    user, answer = (
        _message("user", data.get("prompt")),
        _message("assistant", data.get("completion")),
    )
    if user is None or answer is None:
        return None
    return _with_rest(data, [user, answer], ("prompt", "completion"))


def _with_rest(data: dict[str, Any], messages: list[Any], used: tuple[str, ...]) -> dict[str, Any]:
    rest = {key: value for key, value in data.items() if key not in used and key != "messages"}
    return {"messages": messages, **rest}


CONVERTERS: dict[str, Callable[[dict[str, Any]], Converted]] = {
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "prompt_completion": from_prompt_completion,
}


def detect(data: dict[str, Any]) -> str | None:
    """The layout of a row: ``chat``, ``sharegpt``, ``alpaca``, ``prompt_completion`` or None."""
    if isinstance(data.get("messages"), list):
        return "chat"
    if "conversations" in data:
        return "sharegpt"
    if "instruction" in data and "output" in data:
        return "alpaca"
    if "prompt" in data and "completion" in data:
        return "prompt_completion"
    return None


@dataclass(frozen=True)
class ToChatParams:
    source: Literal["auto", "alpaca", "sharegpt", "prompt_completion"] = "auto"


class ToChat(Step[ToChatParams]):
    """Converts each row from ``source`` (``auto``: detected per row; chat rows pass
    unchanged). A row that does not fit its layout is removed and counted, with its
    line kept for the audit trail."""

    name = "to_chat"
    Params = ToChatParams

    def __init__(self, params: ToChatParams) -> None:
        super().__init__(params)
        self.converted: Counter[str] = Counter()

    def apply(self, rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            layout = self.params.source if self.params.source != "auto" else detect(row.data)
            if layout == "chat":
                self.converted["chat"] += 1
                yield row
                continue
            data = CONVERTERS[layout](row.data) if layout else None
            if data is None:
                self.drop(row)
            else:
                self.converted[str(layout)] += 1
                yield row._replace(data=data)

    def counters(self) -> dict[str, Any]:
        return {"removed": self.removed, "converted": dict(self.converted)}
