"""What the gateway reserves before the engine has counted a request's tokens."""

from __future__ import annotations

from portal.gateway.exchange import completion_reserve, estimate_prompt_tokens


def test_chat_prompts_are_estimated_per_message():
    messages = [
        {"role": "system", "content": "abcdefgh"},  # ASCII: 8 // 4 + 1, plus 4 per message
        {"role": "user", "content": "你好世界"},  # else one per character
        {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    assert estimate_prompt_tokens({"messages": messages}, "chat") == 7 + 8 + 6 + 4


def test_completion_prompts_are_estimated_as_text_or_token_ids():
    assert estimate_prompt_tokens({"prompt": "abcdefgh"}, "completion") == 3
    assert estimate_prompt_tokens({"prompt": ["ab", [1, 2, 3], 7]}, "completion") == 1 + 3 + 1
    assert estimate_prompt_tokens({}, "completion") == 0


def test_completions_are_reserved_per_choice_and_prompt(settings):
    settings.GATEWAY_DEFAULT_MAX_TOKENS = 256
    assert completion_reserve({"max_tokens": 10, "n": 2}, "chat") == 20
    assert completion_reserve({"max_completion_tokens": 7, "max_tokens": 10}, "chat") == 7
    assert completion_reserve({"n": 1000}, "chat") == 256 * 128
    assert completion_reserve({"max_tokens": 4, "prompt": ["a", "b", "c"]}, "completion") == 12
    assert completion_reserve({"max_tokens": 4, "prompt": [1, 2, 3]}, "completion") == 4
    assert completion_reserve({"max_tokens": 4, "prompt": ["a", "b"]}, "chat") == 4
