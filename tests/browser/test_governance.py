"""Content governance in a real browser, on real parts: a user chats with the served
tiny model in the playground, sees the answer labelled 「人工智能生成」 ("AI-generated" in
English) and reports it;
an admin signs in, opens the review queue from the nav, finds the report, opens it
(the reason, the conversation), removes it with a note, and finds the decision in the
audit log page — in zh-hans and in English."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, off_loop, sign_up

ANSWER_TIMEOUT_MS = 60_000
WORDS = {
    "zh-hans": {"locale": "zh-CN", "label": "人工智能生成", "removed": "删除"},
    "en": {"locale": "en-US", "label": "AI-generated", "removed": "Remove"},
}
REASON = "回答里有不当内容，请审核"
NOTES = "确认违规，删除"


def chat_and_report(page: Page, model: str, label: str) -> str:
    """Ask the model, report its answer; the review item's id."""
    page.goto("/playground/")
    expect(page.locator(f"#pg-model option[value='{model}']")).to_be_attached()
    page.select_option("#pg-model", model)
    page.fill("#pg-temperature", "0")
    page.fill("#pg-max-tokens", "16")
    page.fill("#pg-message", "你好")
    page.click("#pg-send")
    turn = page.locator(".turn.assistant.done")
    expect(turn).to_have_count(1, timeout=ANSWER_TIMEOUT_MS)
    expect(turn.locator(".aigc-label")).to_have_text(label)
    assert turn.locator(".content").inner_text().strip()

    turn.locator(".pg-report-open").click()
    turn.locator(".pg-report-reason").fill(REASON)
    with page.expect_response("**/api/governance/reports/") as sent:
        turn.locator(".pg-report-send").click()
    assert sent.value.status == 201, sent.value.text()
    expect(turn.locator(".pg-report-status.pg-reported")).to_be_visible()
    expect(turn.locator(".pg-report-open")).to_have_count(0)
    item_id: str = sent.value.json()["item_id"]
    return item_id


def sign_in_admin(page: Page) -> str:
    username = f"admin-{uuid.uuid4().hex[:8]}"
    off_loop(
        lambda: get_user_model().objects.create_user(
            username=username, password=PASSWORD, is_staff=True, is_superuser=True
        )
    )
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form:not(#language-switch) button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)
    return username


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_a_reported_answer_is_removed_by_an_admin_and_audited(
    new_context: Any, served_model: str, language: str
) -> None:
    words = WORDS[language]
    user_page = new_context(locale=words["locale"]).new_page()
    sign_up(user_page)
    expect(user_page.locator("#nav-governance")).to_have_count(0)
    item_id = chat_and_report(user_page, served_model, words["label"])

    page = new_context(locale=words["locale"]).new_page()
    admin = sign_in_admin(page)
    page.click("#nav-governance")
    page.wait_for_url("**/governance/")
    page.click("#gv-nav-queue")
    row = page.locator(f"#gv-queue tr.gv-item[data-item='{item_id}']")
    expect(row).to_contain_text(served_model)
    expect(row.locator(".gv-status")).to_have_attribute("data-status", "pending")
    row.locator("a").first.click()
    page.wait_for_url(f"**/governance/review/{item_id}/")
    expect(page.locator("#gv-reason")).to_have_text(REASON)
    expect(page.locator("#gv-conversation")).to_contain_text("你好")

    page.click("#gv-assign-me")
    expect(page.locator("#gv-assignee")).to_contain_text(admin)
    page.select_option("#id_decision", "remove")
    page.fill("#id_notes", NOTES)
    page.click("#gv-decide-submit")
    expect(page.locator("#gv-resolution")).to_contain_text(words["removed"])
    expect(page.locator(".gv-ok[role=alert]")).to_be_visible()

    page.click("#gv-nav-audit")
    page.wait_for_url("**/governance/audit/")
    decided = page.locator("#gv-audit tr.gv-event[data-action='review.decide']", has_text=item_id)
    expect(decided).to_have_count(1)
    expect(decided).to_contain_text(NOTES)
    expect(decided).to_contain_text(admin)
    reported = page.locator("#gv-audit tr.gv-event[data-action='report.create']", has_text=item_id)
    expect(reported).to_have_count(1)
