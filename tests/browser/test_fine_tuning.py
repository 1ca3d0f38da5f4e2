"""The fine-tuning pages in a real browser, on real parts: a new user with a small chat
dataset creates a LoRA fine-tune of the served tiny model through the form, watches its
page poll to ``succeeded`` (status, progress bar and loss chart updating), follows "try
it in the playground" and chats with the fine-tuned model, which a real node agent runs
with the real runner and then serves from the base model's own replica.

What Celery beat does in production (placing work, advancing jobs) runs in a thread
here (the module's ``beat``); the dataset is ingested through the service, as a worker
would, since the dataset pages have their own browser test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, Response, expect

from compute.agent.procs import wait_for
from tests.browser.conftest import off_loop, sign_up

ROWS = 8
ANSWER = "微调之后的回答。"
JOB_TIMEOUT_MS = 300_000
POSITIVE = re.compile(r"^[1-9][0-9]*$")


@pytest.fixture(scope="module")
def beat(served_model: str) -> Iterator[None]:
    """Celery beat's periodic work (reconcile the pool, advance waiting jobs) every
    half second in a thread, away from Playwright's loop."""
    from django.db import connections

    from compute.services.scheduler import reconcile_pool
    from training.tasks import advance_waiting_jobs

    done = threading.Event()

    def run() -> None:
        try:
            while not done.wait(0.5):
                reconcile_pool()
                advance_waiting_jobs()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join(30)


def chat_dataset(username: str) -> str:
    """A ready chat dataset ``<user>/ft-chat`` (version 1) of the user's; its name."""
    from django.contrib.auth import get_user_model

    from datasets.services.repos import create_repo
    from tests.datasets.conftest import add_version

    user = get_user_model().objects.get(username=username)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"第 {n} 个问题"},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for n in range(ROWS)
    ]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    repo = create_repo(user, user, "ft-chat", visibility="private")
    version = add_version(repo, user, {"train.jsonl": text})
    assert version.state == "ready", version.report
    return f"{username}/ft-chat@{version.number}"


def adapter_loaded(name: str) -> bool:
    from compute.models import Replica, ReplicaStatus

    return any(
        name in replica.adapters for replica in Replica.objects.filter(status=ReplicaStatus.READY)
    )


def create_job_through_the_form(page: Page, model: str, dataset: str, epochs: int = 2) -> None:
    page.goto("/fine-tuning/")
    page.click("#ft-new-link")
    page.wait_for_url("**/fine-tuning/new/")
    form = "#ft-new-form"
    expect(page.locator(f"{form} input[name=n_epochs]")).to_have_value("auto")
    expect(page.locator(f"{form} input[name=lora_r]")).to_have_value("8")
    page.select_option(f"{form} select[name=model]", model)
    page.select_option(f"{form} select[name=training_file]", dataset)
    page.fill(f"{form} input[name=n_epochs]", str(epochs))
    page.fill(f"{form} input[name=batch_size]", "2")
    page.fill(f"{form} input[name=suffix]", "browser")
    page.click("#ft-create")
    page.wait_for_url("**/fine-tuning/ftjob-*/")


def test_user_fine_tunes_through_the_pages_and_chats_with_the_result(
    new_context: Callable[..., BrowserContext], served_model: str, beat: None
) -> None:
    page = new_context(locale="zh-CN").new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    username = sign_up(page)
    dataset = off_loop(lambda: chat_dataset(username))
    polls: list[Response] = []
    page.on("response", lambda r: "/data.json" in r.url and polls.append(r))

    create_job_through_the_form(page, served_model, dataset)

    status = page.locator("#ft-status-box .ft-status")
    expect(page.locator("#ft-cancel")).to_be_visible()
    # The page polls while the job is active and reloads itself once it has ended.
    expect(page.locator("#ft-result")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(status).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#ft-progress")).to_have_js_property("value", 100)
    expect(page.locator("#ft-percent")).to_have_text("100 %")
    expect(status).to_have_text("已完成")
    expect(page.locator("#ft-cancel")).to_have_count(0)
    expect(page.locator("#ft-loss-chart")).to_have_attribute("data-points", POSITIVE)
    expect(page.locator("#ft-checkpoints tr")).not_to_have_count(0)
    assert len(polls) >= 2 and all(r.status == 200 for r in polls)
    name = page.inner_text("#ft-model").strip()
    assert name.startswith(f"ft:{served_model}:{username}:browser:ftjob-")
    expect(page.locator("#ft-events")).to_contain_text(name)
    metrics_csv = page.request.get(page.get_attribute(".ft-result-file", "href") or "")
    assert metrics_csv.ok and metrics_csv.text().startswith("step,")
    model_page = page.request.get(page.get_attribute("#ft-model-page", "href") or "")
    assert model_page.ok and "tiny-chat-ft-browser" in model_page.text()

    off_loop(lambda: wait_for(lambda: adapter_loaded(name), timeout_s=120, what="the adapter"))
    page.click("#ft-try")
    page.wait_for_url(re.compile(r"/playground/\?model=ft%3A"))
    expect(page.locator("#pg-model")).to_have_value(name)
    page.fill("#pg-max-tokens", "16")
    page.fill("#pg-message", "第 1 个问题")
    with page.expect_response("**/v1/chat/completions") as chat:
        page.click("#pg-send")
    assert chat.value.status == 200
    answer = page.locator(".turn.assistant.done .content")
    expect(answer).to_have_count(1, timeout=60_000)
    assert answer.inner_text().strip()
    expect(page.locator("#pg-error")).to_be_hidden()
    assert not script_errors


def test_user_cancels_a_job_from_its_page(
    new_context: Callable[..., BrowserContext], served_model: str, beat: None
) -> None:
    page = new_context(locale="en-US").new_page()
    username = sign_up(page)
    dataset = off_loop(lambda: chat_dataset(username))
    create_job_through_the_form(page, served_model, dataset, epochs=50)
    status = page.locator("#ft-status-box .ft-status")
    expect(status).to_have_attribute("data-status", re.compile("queued|running"))

    page.click("#ft-cancel")  # a POST with the form's CSRF token

    page.wait_for_url("**/fine-tuning/ftjob-*/")
    expect(status).to_have_attribute("data-status", "cancelled")
    expect(status).to_have_text("Cancelled")
    expect(page.locator("#ft-cancel")).to_have_count(0)
    expect(page.locator("#ft-result")).to_have_count(0)
