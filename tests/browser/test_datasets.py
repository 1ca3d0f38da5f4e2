"""The dataset pages in a real browser: a new user creates a dataset, uploads a chat
JSONL through the page (presigned multipart, straight to SeaweedFS: CORS preflight and
the ``ETag`` header included), watches validation finish, and searches the viewer; a
file with a planted error shows its line number in the report.

Validation runs in a real Celery worker process (the module's ``dataset_worker``), as in
production: the page then really waits through ``ingesting`` while it polls. Eager tasks
would instead run the ingest inside the ``complete`` request, hiding that wait and the
broker hand-off (``transaction.on_commit`` → ``delay``) from the test.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from playwright.sync_api import Page, Response, expect

from compute.agent.procs import spawn, stop, wait_for

SEARCHED = "长城"
PART_BYTES = 5 * 1024 * 1024  # S3's smallest part: a file a little larger has two parts


@pytest.fixture(scope="module")
def dataset_worker(portal_url: str, tmp_path_factory: Any) -> Iterator[None]:
    """A Celery worker on the live portal's test database and the session's broker."""
    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    database = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    log = tmp_path_factory.mktemp("dataset-worker") / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo"]
    worker = spawn(
        [*argv, "--loglevel=INFO", "-n", f"browser-{uuid.uuid4().hex[:6]}@%h"],
        log=log,
        env={**os.environ, "DATABASE_URL": database},
    )
    try:
        wait_for(
            lambda: "ready." in log.read_text(errors="replace"),
            timeout_s=60,
            what="the Celery worker",
            proc=worker,
            log=log,
        )
        yield
    finally:
        stop(worker, grace_s=15)


def chat_row(user: str, answer: str) -> str:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": messages}, ensure_ascii=False)


def two_part_chat_file(path: Path) -> Path:
    """A chat JSONL a little over one part, with one row that mentions SEARCHED."""
    filler = "数据集上传测试，" * 80
    lines = [chat_row("北京有什么名胜？", f"{SEARCHED}和故宫都值得一去。")]
    size = 0
    while size <= PART_BYTES + 64 * 1024:
        lines.append(chat_row(f"第 {len(lines)} 个问题", filler))
        size += len(lines[-1].encode()) + 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def create_dataset(page: Page, name: str) -> None:
    page.goto("/datasets/")
    page.click("#ds-new-link")
    page.fill("#ds-new-form input[name=name]", name)
    page.select_option("#ds-new-form select[name=visibility]", "public")
    page.click("#ds-new-form button[type=submit]")
    page.wait_for_url(f"**/datasets/*/{name}/")


def upload(page: Page, path: Path, state: str) -> None:
    """Upload ``path`` through the panel and wait until validation says ``state``."""
    page.set_input_files("#ds-file-input", str(path))
    page.click("#ds-upload-start")
    expect(page.locator("#ds-upload-status")).to_have_attribute("data-state", state, timeout=90_000)
    expect(page.locator("#ds-upload-error")).to_be_hidden()


def test_user_uploads_a_chat_file_watches_validation_and_searches_the_viewer(
    signed_in_page: Page, dataset_worker: None, settings: Any, tmp_path: Path
) -> None:
    settings.DATASET_UPLOAD_PART_BYTES = PART_BYTES
    page = signed_in_page
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    create_dataset(page, "zh-chat")
    store_puts: list[Response] = []
    page.on("response", lambda r: r.request.method == "PUT" and store_puts.append(r))

    upload(page, two_part_chat_file(tmp_path / "chat.jsonl"), "ready")

    expect(page.locator("#ds-upload-files progress")).to_have_js_property("value", 100)
    expect(page.locator("#ds-upload-files .ds-percent")).to_have_text("100 %")
    expect(page.locator("#ds-upload-status")).to_contain_text("校验通过")
    assert len(store_puts) == 2 and all(r.status == 200 for r in store_puts)
    assert all(urlsplit(r.url).netloc != urlsplit(page.url).netloc for r in store_puts)
    assert all("etag" in r.headers["access-control-expose-headers"].lower() for r in store_puts)

    page.click("#ds-upload-result")
    page.wait_for_url("**/?version=1")
    expect(page.locator("#dv-table .dv-row")).to_have_count(20)
    page.fill("#dv-search", SEARCHED)
    page.click("#dv-search-form button[type=submit]")
    expect(page.locator("#dv-table .dv-row")).to_have_count(1)
    expect(page.locator("#dv-table .dv-row")).to_contain_text(f"{SEARCHED}和故宫")
    expect(page.locator("#dv-error")).to_be_hidden()
    page.click("#dv-stats-button")
    expect(page.locator("#dv-stats-table")).to_contain_text("messages")
    assert not script_errors


def test_a_planted_error_shows_its_line_number_in_the_report(
    signed_in_page: Page, dataset_worker: None, tmp_path: Path
) -> None:
    page = signed_in_page
    create_dataset(page, "broken-chat")
    rows = [chat_row(f"问题 {n}", f"回答 {n}") for n in range(1, 6)]
    rows.insert(3, '{"messages": [{"role": "user", "content": "没有结尾"')
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    upload(page, path, "invalid")

    expect(page.locator("#ds-upload-status")).to_contain_text("校验未通过")
    page.click("#ds-upload-result")
    report = page.locator("#ds-report")
    expect(report.locator("td.ds-line")).to_have_text(["4"])
    expect(report).to_contain_text("invalid_json")
