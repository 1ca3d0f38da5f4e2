"""The evaluation pages in a real browser, on real parts: a new user starts a run of a
built-in task on the served tiny model through the form and watches its page poll to
``succeeded`` (status, progress bar, scores, chart, samples, record); submits the model
to a leaderboard and sees it ranked; asks a prompt in an arena of two served models,
reads the two anonymous answers, votes, and sees the names and the ratings.

Runs are real Celery tasks: a real worker process runs them against the live portal's
gateway (``EVAL_GATEWAY_URL``); arena answers come through the same gateway from the
web process. What beat does in production (placing replicas) runs in a thread here.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import override_settings
from playwright.sync_api import BrowserContext, Response, expect

from compute.agent.procs import wait_for
from tests.browser.conftest import off_loop, sign_up
from tests.workers import celery_worker

RUN_TIMEOUT_MS = 240_000
SECOND_MODEL = "acme/tiny-chat-b"
POSITIVE = re.compile(r"^[1-9][0-9]*$")
SMALL_TASK = """task: sums3
description: 三道加减法
dataset: {builtin: arithmetic_zh.jsonl, layout: jsonl}
output_type: generate_until
doc_to_text: "问题：{{ question }}\\n答案："
doc_to_target: "{{ answer }}"
target_delimiter: ""
generation: {max_tokens: 4, until: ["\\n"], temperature: 0.0}
filters: [{name: regex, pattern: "(-?[0-9]+)", group: 1}, {name: take_first}]
metrics: [{name: exact_match}]
limit: 3
"""
SMALL_SUITE = """suite: quick3
description: 一个三道题的小套件
tasks: [{task: sums3, weight: 1.0}]
aggregation: macro
"""


@pytest.fixture(scope="module")
def worker(portal_url: str, served_model: str, tmp_path_factory: Any) -> Iterator[None]:
    """A real Celery worker whose runs reach the models through the live portal."""
    saved = os.environ.get("EVAL_GATEWAY_URL")
    os.environ["EVAL_GATEWAY_URL"] = portal_url
    try:
        with celery_worker(tmp_path_factory.mktemp("eval-worker"), name="eval"):
            yield
    finally:
        if saved is None:
            os.environ.pop("EVAL_GATEWAY_URL", None)
        else:
            os.environ["EVAL_GATEWAY_URL"] = saved


@pytest.fixture(scope="module")
def gateway(portal_url: str) -> Iterator[None]:
    """The web process (the arena's answers) asks through the live portal, briefly."""
    with override_settings(EVAL_GATEWAY_URL=portal_url, EVAL_ARENA_MAX_TOKENS=12):
        yield


@pytest.fixture(scope="module")
def second_model(portal_url: str, served_model: str, tiny_model_dir: Path) -> Iterator[str]:
    """A second public model on the same agent (an arena draws two distinct ones);
    beat's placement runs in a thread until its replica is ready and the gateway routes
    it, and it is stopped after the module so later modules find the node as they
    expect."""
    from django.db import connections

    from compute.models import Deployment, Replica, ReplicaStatus
    from compute.services.deployments import deploy_model, stop_deployment
    from compute.services.scheduler import reconcile_pool
    from portal.services.registry import import_model_dir
    from tests.conftest import make_actor

    def deploy() -> tuple[Any, Deployment]:
        admin = make_actor(f"admin-{uuid.uuid4().hex[:8]}", is_staff=True, is_superuser=True)
        version = import_model_dir(tiny_model_dir, SECOND_MODEL, actor=None, visibility="public")
        return admin, deploy_model(admin.user, version.repo, replicas=1)

    admin, deployment = off_loop(deploy)
    done = threading.Event()

    def beat() -> None:
        try:
            while not done.wait(0.5):
                reconcile_pool()
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()

    def ready() -> bool:
        return Replica.objects.filter(deployment=deployment, status=ReplicaStatus.READY).exists()

    def routed() -> bool:
        # The gateway serves its last route table while it refreshes one in the
        # background, so the first request after a quiet spell may not see the new model.
        answer = httpx.get(
            f"{portal_url}/v1/models",
            headers={"Authorization": f"Bearer {admin.key}"},
            timeout=10,
        )
        return SECOND_MODEL in {model["id"] for model in answer.json()["data"]}

    try:
        off_loop(lambda: wait_for(ready, timeout_s=180, what="the second replica"))
        wait_for(routed, timeout_s=60, what="the gateway's route to the second model")
        yield SECOND_MODEL
    finally:
        done.set()
        thread.join(30)
        off_loop(lambda: stop_deployment(admin.user, deployment))


def user_of(username: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def quick_board(username: str) -> str:
    """The user's public leaderboard on a three-question suite; its ``namespace/name``."""
    from evaluation.services.catalog import create_suite, create_task
    from evaluation.services.leaderboards import create_leaderboard

    user = user_of(username)
    create_task(user, user, SMALL_TASK, visibility="public")
    suite = create_suite(user, user, SMALL_SUITE, visibility="public")
    return str(create_leaderboard(user, user, "quick", suite, title="Quick three"))


def test_user_starts_a_run_and_watches_it_finish(
    new_context: Callable[..., BrowserContext], served_model: str, worker: None
) -> None:
    page = new_context(locale="zh-CN").new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    sign_up(page)
    polls: list[Response] = []
    page.on("response", lambda r: "/data.json" in r.url and polls.append(r))

    page.click("#nav-evaluation")
    page.wait_for_url("**/evaluation/")
    expect(page.locator("#ev-tasks")).to_contain_text("openmaas/arithmetic_zh")
    page.click("#ev-new-link")
    page.wait_for_url("**/evaluation/runs/new/")
    form = "#ev-new-form"
    page.select_option(f"{form} select[name=target]", "task:openmaas/arithmetic_zh")
    page.select_option(f"{form} select[name=model]", served_model)
    page.fill(f"{form} input[name=limit]", "3")
    page.fill(f"{form} input[name=concurrency]", "2")
    page.click("#ev-start")
    page.wait_for_url("**/evaluation/runs/evalrun-*/")

    status = page.locator("#ev-status-box .ev-status")
    expect(status).to_have_attribute("data-status", re.compile("queued|running"))
    # The page polls while the run is active and reloads itself once it has ended.
    expect(page.locator("#ev-scores")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(status).to_have_attribute("data-status", "succeeded")
    expect(status).to_have_text("已完成")
    expect(page.locator("#ev-progress")).to_have_js_property("value", 100)
    expect(page.locator("#ev-counts")).to_have_text("3 / 3")
    expect(page.locator("#ev-cancel")).to_have_count(0)
    expect(page.locator('#ev-scores tr[data-metric="exact_match"]')).to_have_count(1)
    expect(page.locator("#ev-charts canvas")).to_have_attribute("data-bars", POSITIVE)
    expect(page.locator("#ev-samples .ev-sample")).to_have_count(3)
    expect(page.locator("#ev-record")).to_contain_text(served_model)
    expect(page.locator("#ev-record-tasks")).to_contain_text("openmaas/arithmetic_zh")
    assert polls and all(r.status == 200 for r in polls)
    assert not script_errors


def test_user_submits_to_a_leaderboard_and_sees_the_ranking(
    new_context: Callable[..., BrowserContext], served_model: str, worker: None
) -> None:
    page = new_context(locale="en-US").new_page()
    username = sign_up(page)
    name = off_loop(lambda: quick_board(username))
    page.goto("/evaluation/")
    page.click(f"#ev-leaderboards a[href='/evaluation/leaderboards/{name}/']")
    page.wait_for_url(f"**/evaluation/leaderboards/{name}/")
    expect(page.locator("#ev-standings")).to_contain_text("No model ranked yet.")

    page.select_option("#ev-submit-form select[name=model]", served_model)
    page.click("#ev-submit")
    page.wait_for_url(f"**/evaluation/leaderboards/{name}/")
    expect(page.locator("#ev-submissions .ev-submission")).to_have_count(1)
    expect(page.locator("#ev-submissions")).to_contain_text(served_model)

    def ranked() -> bool:
        page.reload()
        return page.locator(f'#ev-standings tr[data-model="{served_model}"]').count() == 1

    wait_for(ranked, timeout_s=RUN_TIMEOUT_MS / 1000, what="the ranking", interval_s=2)
    row = page.locator(f'#ev-standings tr[data-model="{served_model}"]')
    expect(row.locator(".ev-value")).to_have_text(re.compile(r"^\d\.\d{4}"))
    expect(page.locator("#ev-submissions .ev-status")).to_have_attribute("data-status", "finished")
    row.locator(".ev-standing-run").click()
    page.wait_for_url("**/evaluation/runs/evalrun-*/")
    expect(page.locator("#ev-status-box .ev-status")).to_have_text("Succeeded")


def test_user_votes_in_the_arena_and_sees_the_names(
    new_context: Callable[..., BrowserContext],
    served_model: str,
    second_model: str,
    gateway: None,
) -> None:
    from evaluation.services.arena import create_arena

    page = new_context(locale="zh-CN").new_page()
    username = sign_up(page)

    def arena() -> str:
        user = user_of(username)
        return str(create_arena(user, user, "duel", [served_model, second_model], title="对决"))

    name = off_loop(arena)
    page.goto(f"/evaluation/arenas/{name}/")
    page.fill("#ev-battle-form textarea[name=prompt]", "用一句话介绍你自己。")
    page.click("#ev-battle-start")
    page.wait_for_url(re.compile(r"/evaluation/arenas/.+/\?battle=battle-"))

    battle = page.locator("#ev-battle")
    expect(battle).to_have_attribute("data-voted", "0")
    expect(page.locator("#ev-answer-a")).to_contain_text("模型 A")
    expect(page.locator("#ev-answer-b")).to_contain_text("模型 B")
    expect(page.locator(".ev-model-name")).to_have_count(0)  # anonymous until the vote
    expect(page.locator("#ev-battle-error")).to_have_count(0)

    page.click("#ev-vote-a")
    page.wait_for_url(re.compile(r"\?battle=battle-"))

    expect(battle).to_have_attribute("data-voted", "1")
    names = {page.inner_text("#ev-model-a"), page.inner_text("#ev-model-b")}
    assert names == {served_model, second_model}
    expect(page.locator("#ev-vote-result")).to_contain_text("A 更好")
    expect(page.locator("#ev-votes")).to_have_count(0)
    expect(page.locator("#ev-ratings .ev-rating")).to_have_count(2)
    winner = page.inner_text("#ev-model-a")
    expect(page.locator("#ev-ratings .ev-rating").first).to_have_attribute("data-model", winner)
