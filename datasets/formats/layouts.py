"""Row layouts: which format a row looks like, and what is wrong with a row of a format.

A check returns findings ``(field, reason, message)``; an empty list means a good row.
Checks run once per row on hot paths, so they test types with ``type(x) is T`` and
avoid building anything for a good row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from datasets.text import text_of

Finding = tuple[str, str, str]
Check = Callable[[dict[str, Any]], list[Finding]]

# Layouts a JSON Lines row can be recognised as ("tabular" is any CSV or Parquet file).
FORMATS_DETECTED = (
    "chat",
    "prompt_completion",
    "preference",
    "text",
    "multiple_choice",
    "alpaca",
    "sharegpt",
)
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CHAT_ASSISTANT = frozenset({"assistant"})
PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
SHAREGPT_ROLES = frozenset(
    {"system", "human", "user", "gpt", "assistant", "function_call", "observation", "tool"}
)
SHAREGPT_ASSISTANT = frozenset({"gpt", "assistant"})
CHOICE_LETTERS = "ABCDEFGHIJ"
# Tokens a chat template adds around each message (role name, separators) and to open
# the reply: a small, model-independent allowance for the context-length check.
MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3


def layout_of(row: dict[str, Any]) -> str | None:
    """The format whose distinguishing keys ``row`` has, or ``None``; the order settles
    rows with keys of several layouts (a chat row with a ``text`` key is chat)."""
    if "preferred_output" in row or "non_preferred_output" in row:
        return "preference"
    if "messages" in row:
        return "chat"
    if "conversations" in row:
        return "sharegpt"
    if "question" in row and ("choices" in row or ("A" in row and "B" in row)):
        return "multiple_choice"
    if "instruction" in row and ("output" in row or "input" in row):
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    return None


def _string(row: dict[str, Any], key: str, out: list[Finding], *, empty_ok: bool) -> None:
    if key not in row:
        out.append((key, "missing_field", f"'{key}' is required"))
        return
    value = row[key]
    if type(value) is not str:
        out.append((key, "wrong_type", f"'{key}' must be a string, not {_name(value)}"))
    elif not empty_ok and not value.strip():
        out.append((key, "empty_value", f"'{key}' is empty"))


def _name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_text(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    _string(row, "text", out, empty_ok=False)
    return out


def check_prompt_completion(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    _string(row, "prompt", out, empty_ok=True)
    _string(row, "completion", out, empty_ok=False)
    return out


def check_alpaca(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    _string(row, "instruction", out, empty_ok=False)
    if "input" in row:
        _string(row, "input", out, empty_ok=True)
    _string(row, "output", out, empty_ok=False)
    return out


def check_tabular(row: dict[str, Any]) -> list[Finding]:
    return []


def _content(msg: dict[str, Any], where: str, role: Any, out: list[Finding]) -> None:
    """Content is a non-empty string or list of parts; an assistant message that calls
    tools may have none."""
    content = msg.get("content")
    if type(content) is str and content:
        return
    calls_tools = role == "assistant" and ("tool_calls" in msg or "function_call" in msg)
    if content is None or content == "":
        if calls_tools:
            return
        if "content" not in msg:
            out.append((f"{where}.content", "missing_field", "the message has no content"))
        else:
            out.append((f"{where}.content", "empty_value", "the message content is empty"))
    elif type(content) is list:
        if not content:
            out.append((f"{where}.content", "empty_value", "the content list is empty"))
        elif not all(type(part) is dict and "type" in part for part in content):
            out.append((f"{where}.content", "wrong_type", "content parts need a 'type'"))
    elif type(content) is not str:
        out.append(
            (f"{where}.content", "wrong_type", f"content must be a string, not {_name(content)}")
        )


def _weight(msg: dict[str, Any], where: str, role: Any, out: list[Finding]) -> None:
    weight = msg["weight"]
    if type(weight) is not int or weight not in (0, 1):
        out.append((f"{where}.weight", "invalid_weight", f"weight must be 0 or 1, not {weight!r}"))
    elif role != "assistant":
        out.append((f"{where}.weight", "invalid_weight", "only assistant messages have a weight"))


def _tool_call_error(call: Any) -> str | None:
    if type(call) is not dict:
        return "a tool call must be an object"
    if type(call.get("id")) is not str or not call["id"]:
        return "a tool call needs a string 'id'"
    if call.get("type", "function") != "function":
        return "a tool call's type must be 'function'"
    function = call.get("function")
    if type(function) is not dict or type(function.get("name")) is not str:
        return "a tool call needs 'function' with a string 'name'"
    if not function["name"]:
        return "the function name is empty"
    arguments = function.get("arguments")
    if type(arguments) is not str:
        return "'function.arguments' must be a string holding JSON"
    try:
        orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return "'function.arguments' is not valid JSON"
    return None


def _tool_calls(msg: dict[str, Any], where: str, role: Any, out: list[Finding]) -> None:
    calls = msg["tool_calls"]
    field = f"{where}.tool_calls"
    if role != "assistant":
        out.append((field, "invalid_tool_call", "only assistant messages call tools"))
    elif type(calls) is not list or not calls:
        out.append((field, "invalid_tool_call", "tool_calls must be a non-empty list"))
    else:
        for index, call in enumerate(calls):
            error = _tool_call_error(call)
            if error:
                out.append((f"{field}[{index}]", "invalid_tool_call", error))


def _message(msg: Any, where: str, out: list[Finding]) -> Any:
    """Checks one chat message; returns its role (``None`` when unusable)."""
    if type(msg) is not dict:
        out.append((where, "wrong_type", f"a message must be an object, not {_name(msg)}"))
        return None
    role = msg.get("role")
    if type(role) is not str or role not in CHAT_ROLES:
        _bad_role(role, "role" in msg, f"{where}.role", out)
        role = None
    _content(msg, where, role, out)
    if "weight" in msg:
        _weight(msg, where, role, out)
    if "tool_calls" in msg:
        _tool_calls(msg, where, role, out)
    if role == "tool" and type(msg.get("tool_call_id")) is not str:
        out.append((f"{where}.tool_call_id", "missing_field", "a tool message needs tool_call_id"))
    return role


def _bad_role(role: Any, present: bool, field: str, out: list[Finding]) -> None:
    if not present:
        out.append((field, "missing_field", "the message has no role"))
    elif role is None or role == "":
        out.append((field, "empty_value", "the role is empty"))
    elif type(role) is not str:
        out.append((field, "wrong_type", f"role must be a string, not {_name(role)}"))
    else:
        out.append((field, "invalid_role", f"unknown role {role!r}"))


def _messages(value: Any, field: str, out: list[Finding]) -> list[Any] | None:
    """Checks a message list; returns the roles, or ``None`` when it is not a list."""
    if type(value) is not list:
        out.append((field, "wrong_type", f"'{field}' must be a list, not {_name(value)}"))
        return None
    if not value:
        out.append((field, "empty_value", f"'{field}' is empty"))
        return None
    roles = []
    for index, msg in enumerate(value):
        # The fast path: a plain message of two keys, role and non-empty text content.
        if type(msg) is dict and len(msg) == 2:
            role, content = msg.get("role"), msg.get("content")
            if type(role) is str and role in PLAIN_ROLES and type(content) is str and content:
                roles.append(role)
                continue
        roles.append(_message(msg, f"{field}[{index}]", out))
    return roles


def _ends_with_assistant(roles: list[Any], field: str, assistant: frozenset[str]) -> Finding | None:
    if roles[-1] in assistant:
        return None
    if not any(role in assistant for role in roles):
        return (field, "no_assistant_message", "the conversation has no assistant message")
    last = f"{field}[{len(roles) - 1}]"
    return (last, "not_ending_with_assistant", "the conversation must end on the assistant")


def check_chat(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    if "messages" not in row:
        return [("messages", "missing_field", "'messages' is required")]
    roles = _messages(row["messages"], "messages", out)
    if roles:
        ending = _ends_with_assistant(roles, "messages", CHAT_ASSISTANT)
        if ending:
            out.append(ending)
    return out


def _preference_output(row: dict[str, Any], key: str, out: list[Finding]) -> None:
    if key not in row:
        out.append((key, "missing_field", f"'{key}' is required"))
        return
    roles = _messages(row[key], key, out)
    for index, role in enumerate(roles or ()):
        if role is not None and role != "assistant":
            out.append((f"{key}[{index}].role", "invalid_role", "outputs are assistant messages"))


def check_preference(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    prompt = row.get("input")
    if "input" not in row:
        out.append(("input", "missing_field", "'input' is required"))
    elif type(prompt) is not dict:
        out.append(("input", "wrong_type", f"'input' must be an object, not {_name(prompt)}"))
    elif "messages" not in prompt:
        out.append(("input.messages", "missing_field", "'input.messages' is required"))
    else:
        _messages(prompt["messages"], "input.messages", out)
    _preference_output(row, "preferred_output", out)
    _preference_output(row, "non_preferred_output", out)
    return out


def _turn(turn: Any, where: str, out: list[Finding]) -> Any:
    if type(turn) is not dict:
        out.append((where, "wrong_type", f"a turn must be an object, not {_name(turn)}"))
        return None
    speaker_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
    speaker = turn.get(speaker_key)
    if type(speaker) is not str or speaker not in SHAREGPT_ROLES:
        _bad_role(speaker, speaker_key in turn, f"{where}.{speaker_key}", out)
        speaker = None
    text = turn.get(text_key)
    if type(text) is not str:
        out.append((f"{where}.{text_key}", "wrong_type", f"'{text_key}' must be a string"))
    elif not text.strip():
        out.append((f"{where}.{text_key}", "empty_value", f"'{text_key}' is empty"))
    return speaker


def check_sharegpt(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    turns = row.get("conversations")
    if "conversations" not in row:
        return [("conversations", "missing_field", "'conversations' is required")]
    if type(turns) is not list or not turns:
        reason = "wrong_type" if type(turns) is not list else "empty_value"
        return [("conversations", reason, "'conversations' must be a non-empty list")]
    roles = [_turn(turn, f"conversations[{i}]", out) for i, turn in enumerate(turns)]
    ending = _ends_with_assistant(roles, "conversations", SHAREGPT_ASSISTANT)
    if ending:
        out.append(ending)
    return out


def choices_of(row: dict[str, Any]) -> Any:
    """The choices of a multiple-choice row: its ``choices`` list, or the values of its
    ``A``, ``B``, … columns (C-Eval/CMMLU layout)."""
    if "choices" in row:
        return row["choices"]
    return [row[letter] for letter in CHOICE_LETTERS if letter in row]


def _answer_error(answer: Any, choices: list[Any]) -> str | None:
    count = len(choices)
    if type(answer) is int:
        return None if 0 <= answer < count else f"answer index {answer} is out of range"
    if type(answer) is not str:
        return f"answer must be an index, a letter or a choice, not {_name(answer)}"
    text = answer.strip()
    if len(text) == 1 and text.upper() in CHOICE_LETTERS[:count]:
        return None
    if text.isdigit() and int(text) < count:
        return None
    if answer in choices:
        return None
    return f"answer {answer!r} is none of the {count} choices"


def check_multiple_choice(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    _string(row, "question", out, empty_ok=False)
    choices = choices_of(row)
    if type(choices) is not list or len(choices) < 2:
        out.append(("choices", "wrong_type", "choices must be a list of at least 2 strings"))
        choices = None
    elif not all(type(choice) is str for choice in choices):
        out.append(("choices", "wrong_type", "every choice must be a string"))
    if "answer" not in row:
        out.append(("answer", "missing_field", "'answer' is required"))
    elif choices is not None:
        error = _answer_error(row["answer"], choices)
        if error:
            out.append(("answer", "invalid_answer", error))
    return out


CHECKS: dict[str, Check] = {
    "chat": check_chat,
    "prompt_completion": check_prompt_completion,
    "preference": check_preference,
    "text": check_text,
    "multiple_choice": check_multiple_choice,
    "alpaca": check_alpaca,
    "sharegpt": check_sharegpt,
    "tabular": check_tabular,
}


def _turns_text(turns: Any) -> tuple[str, int]:
    count = len(turns) if type(turns) is list else 0
    return text_of(turns), MESSAGE_OVERHEAD * count + REPLY_OVERHEAD * bool(count)


def sequence_text(fmt: str | None, row: dict[str, Any]) -> tuple[str, int]:
    """The text a model reads for one row and the tokens its chat template adds: chat
    and ShareGPT count every turn; preference the prompt plus the longer output."""
    if fmt == "chat":
        return _turns_text(row.get("messages"))
    if fmt == "sharegpt":
        return _turns_text(row.get("conversations"))
    if fmt == "preference":
        prompt = row.get("input")
        text, overhead = _turns_text(prompt.get("messages") if type(prompt) is dict else None)
        outputs = (text_of(row.get("preferred_output")), text_of(row.get("non_preferred_output")))
        return f"{text}\n{max(outputs, key=len)}", overhead + MESSAGE_OVERHEAD
    return text_of(row), 0
