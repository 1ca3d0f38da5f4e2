"""The playground in a real browser: a new user signs up, creates an API key (shown
once), opens the playground and watches a served model's answer stream in — in zh-hans
and in English. The browser session authorises the chat; no key is pasted anywhere."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from portal.models.keys import KEY_PREFIX, VISIBLE_CHARS
from tests.browser.conftest import sign_up

WORDS = {
    "zh-hans": {"locale": "zh-CN", "nav": "模型体验", "send": "发送", "busy": "请求过于频繁"},
    "en": {"locale": "en-US", "nav": "Playground", "send": "Send", "busy": "Too many requests"},
}

# Records the assistant answer's length at every change, to see it arrive in pieces.
WATCH_ANSWER = """() => {
  window.answerLengths = [];
  const transcript = document.getElementById("pg-transcript");
  new MutationObserver(() => {
    const answer = transcript.querySelector(".turn.assistant .content");
    if (answer) window.answerLengths.push(answer.textContent.length);
  }).observe(transcript, {subtree: true, childList: true, characterData: true});
}"""


def create_key_shown_once(page: Page) -> None:
    page.fill("input[name=name]", "laptop")
    page.click("form:has(input[name=name]) button[type=submit]")
    secret = page.inner_text("#new-key").strip()
    assert secret.startswith(KEY_PREFIX)
    page.goto("/keys/")
    listing = page.content()
    assert secret not in listing
    assert secret[: len(KEY_PREFIX) + VISIBLE_CHARS] in listing


def open_playground(page: Page, words: dict[str, str], model: str) -> None:
    page.click(f"nav a:has-text('{words['nav']}')")
    page.wait_for_url("**/playground/")
    expect(page.locator("#pg-send")).to_have_text(words["send"])
    expect(page.locator(f"#pg-model option[value='{model}']")).to_be_attached()
    page.select_option("#pg-model", model)


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_new_user_chats_and_the_answer_streams_in(
    new_context: Any, served_model: str, language: str
) -> None:
    words = WORDS[language]
    page = new_context(locale=words["locale"]).new_page()
    sign_up(page)
    create_key_shown_once(page)
    open_playground(page, words, served_model)
    assert page.get_attribute("html", "lang") == language

    page.fill("#pg-system", "You are a terse assistant.")
    page.fill("#pg-temperature", "0")
    page.fill("#pg-max-tokens", "24")
    page.fill("#pg-message", "你好" if language == "zh-hans" else "Hello")
    page.evaluate(WATCH_ANSWER)
    with page.expect_response("**/v1/chat/completions") as chat:
        page.click("#pg-send")
    assert chat.value.status == 200
    assert chat.value.headers["content-type"].startswith("text/event-stream")

    answer = page.locator(".turn.assistant.done .content")
    expect(answer).to_have_count(1, timeout=60_000)
    assert answer.inner_text().strip()
    lengths = page.evaluate("window.answerLengths")
    assert len({n for n in lengths if n > 0}) >= 2, f"the answer arrived in one piece: {lengths}"
    expect(page.locator("#pg-error")).to_be_hidden()


def test_gateway_errors_are_shown_readably(signed_in_page: Page, served_model: str) -> None:
    page = signed_in_page
    error = {"message": "Rate limit reached.", "type": "requests", "param": None, "code": "x"}
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=429, headers={"Retry-After": "7"}, json={"error": error}
        ),
    )
    open_playground(page, WORDS["zh-hans"], served_model)
    page.fill("#pg-message", "你好")
    page.click("#pg-send")
    alert = page.locator("#pg-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("429")
    expect(alert).to_contain_text(WORDS["zh-hans"]["busy"])
    expect(alert).to_contain_text("7")
    expect(alert).to_contain_text("Rate limit reached.")
    expect(page.locator(".turn.assistant")).to_have_count(0)
