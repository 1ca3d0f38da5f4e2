"""The evaluation pages: they need a sign-in; an outsider gets 404 for a private run,
task, suite, leaderboard, arena or battle; a run's page shows scores ± stderr, chart
data, the samples (paged, filtered by task) and the reproducibility record, and its
JSON the progress; the new-run form offers only what the user may read and starts a
run; a leaderboard shows its standings and takes submissions; the comparison shows
per-task deltas; an arena hides the models' names until the vote."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from evaluation.models import (
    Arena,
    Battle,
    EvalRun,
    EvalSample,
    EvalSuite,
    EvalTask,
    Leaderboard,
    Submission,
    SuiteTask,
)
from portal.models.jobs import JobStatus
from tests.factories import model_repo

pytestmark = pytest.mark.django_db
TASK_YAML = """task: sums
description: 两位数加法
dataset: {builtin: arithmetic_zh.jsonl, split: test}
output_type: generate_until
doc_to_text: "问题：{{ question }}\\n答案："
doc_to_target: "{{ answer }}"
metrics: [{name: exact_match}]
"""


def browser(actor: Any, language: str = "zh-hans") -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    client.force_login(actor.user)
    return client


def owned(model: type, owner: Any, visibility: str = "private", **fields: Any) -> Any:
    row = model(visibility=visibility, **fields)
    row.set_owner(owner)
    row.save()
    return row


@pytest.fixture
def task(owner: Any) -> EvalTask:
    return owned(
        EvalTask,
        owner.user,
        name="sums",
        description="两位数加法",
        output_type="generate_until",
        source=TASK_YAML,
        spec={"task": "sums", "metrics": [{"name": "exact_match"}], "num_fewshot": 0},
        spec_sha256="a" * 64,
        tags=["zh"],
    )


@pytest.fixture
def suite(owner: Any, task: EvalTask) -> EvalSuite:
    suite = owned(EvalSuite, owner.user, name="basics", description="基础能力")
    SuiteTask.objects.create(suite=suite, task=task, weight=1.0)
    return suite


def scores(value: float) -> dict[str, Any]:
    metric = {"value": value, "stderr": 0.125, "n": 4}
    return {
        "tasks": {"olivia/sums": {"exact_match": metric, "n_errors": 1, "primary": "exact_match"}},
        "suite": {"score": value, "stderr": 0.125, "aggregation": "macro", "weights": {}},
    }


def finished_run(owner: Any, suite: EvalSuite, model: str, value: float, **fields: Any) -> EvalRun:
    return owned(
        EvalRun,
        owner.user,
        suite=suite,
        model_name=model,
        status=JobStatus.SUCCEEDED,
        progress=1.0,
        total_samples=4,
        done_samples=4,
        scores=scores(value),
        record={
            "platform_version": "0.1.0",
            "model": {"name": model, "version": 1, "revision": "r" * 40},
            "tasks": {
                "olivia/sums": {
                    "spec_sha256": "a" * 64,
                    "data_sha256": "d" * 64,
                    "template": "问题：",
                    "num_fewshot": 0,
                    "fewshot_seed": 1234,
                    "n_docs": 4,
                }
            },
            "decoding": {"temperature": 0.0},
            "seed": 1234,
        },
        **fields,
    )


@pytest.fixture
def run(owner: Any, suite: EvalSuite, task: EvalTask) -> EvalRun:
    run = finished_run(owner, suite, "olivia/tiny", 0.75)
    for n in range(25):
        EvalSample.objects.create(
            run=run,
            task=task,
            doc_index=n,
            prompt=f"问题：{n} + 1 =\n答案：",
            target=str(n + 1),
            output=f"{n + 1}",
            extracted=str(n + 1),
            metrics={"exact_match": 1.0 if n % 4 else 0.0},
            error="timeout" if n == 3 else "",
        )
    return run


@pytest.fixture
def active_run(owner: Any, task: EvalTask) -> EvalRun:
    return owned(
        EvalRun,
        owner.user,
        task=task,
        model_name="olivia/tiny",
        status=JobStatus.RUNNING,
        total_samples=40,
        done_samples=10,
        progress=0.25,
    )


def test_the_pages_need_a_sign_in(run: EvalRun, task: EvalTask) -> None:
    for path in (
        "/evaluation/",
        "/evaluation/runs/new/",
        f"/evaluation/runs/{run.id}/",
        "/evaluation/tasks/olivia/sums/",
    ):
        response = Client().get(path)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_outsider_gets_404_for_private_things(
    outsider: Any, owner: Any, run: EvalRun, suite: EvalSuite, active_run: EvalRun
) -> None:
    board = owned(Leaderboard, owner.user, name="board", suite=suite)
    arena = owned(Arena, owner.user, name="ring", contenders=["a/x", "b/y"])
    battle = Battle.objects.create(
        arena=arena,
        user=owner.user,
        model_a="a/x",
        model_b="b/y",
        prompt="你好",
        answer_a="甲",
        answer_b="乙",
    )
    client = browser(outsider)

    for path in (
        f"/evaluation/runs/{run.id}/",
        f"/evaluation/runs/{run.id}/data.json",
        "/evaluation/tasks/olivia/sums/",
        "/evaluation/suites/olivia/basics/",
        f"/evaluation/leaderboards/{board}/",
        f"/evaluation/arenas/{arena}/",
        f"/evaluation/compare/?a={run.id}&b={run.id}",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/evaluation/runs/{active_run.id}/cancel/").status_code == 404
    assert client.post(f"/evaluation/battles/{battle.id}/vote/", {"winner": "a"}).status_code == 404
    active_run.refresh_from_db()
    battle.refresh_from_db()
    assert active_run.status == JobStatus.RUNNING and battle.winner == ""


def test_the_overview_lists_what_the_user_may_read(
    owner: Any, outsider: Any, run: EvalRun, suite: EvalSuite
) -> None:
    mine = browser(owner).get("/evaluation/").content.decode()
    theirs = browser(outsider).get("/evaluation/").content.decode()

    assert run.id in mine and "olivia/basics" in mine and "olivia/sums" in mine
    assert run.id not in theirs and "olivia/basics" not in theirs and "olivia/sums" not in theirs
    assert 'id="nav-evaluation"' in mine and "评测" in mine


def test_the_pages_speak_english_too(owner: Any, run: EvalRun) -> None:
    arena = owned(Arena, owner.user, name="ring", contenders=["a/x", "b/y"])
    client = browser(owner, "en")

    page = client.get(f"/evaluation/runs/{run.id}/").content.decode()
    ring = client.get(f"/evaluation/arenas/{arena}/").content.decode()

    assert "Reproducibility record" in page and "Succeeded" in page
    assert ">Evaluation</a>" in page and "1 sample failed" in page
    assert "95% interval" in ring and "0 votes." in ring


def test_a_runs_page_shows_scores_chart_data_samples_and_record(owner: Any, run: EvalRun) -> None:
    response = browser(owner).get(f"/evaluation/runs/{run.id}/")
    page = response.content.decode()

    assert response.status_code == 200
    assert "0.7500" in page and "± 0.1250" in page  # the score and its stderr
    assert "1 个样本出错" in page
    charts = json.loads(page.split('id="ev-chart-data" type="application/json">')[1].split("<")[0])
    assert charts == [
        {"task": "olivia/sums", "labels": ["exact_match"], "values": [0.75], "stderr": [0.125]}
    ]
    assert page.count('class="ev-sample') == 20 and "第 1 / 2 页" in page
    assert "d" * 64 in page and "r" * 40 in page  # the record: data hash, model revision
    assert "timeout" in page  # a failed sample's error
    assert 'id="ev-cancel"' not in page


def test_the_samples_page_on_and_filter_by_task(owner: Any, run: EvalRun) -> None:
    client = browser(owner)

    second = client.get(f"/evaluation/runs/{run.id}/?page=2").content.decode()
    filtered = client.get(f"/evaluation/runs/{run.id}/?task=olivia/nothing").content.decode()

    assert second.count('class="ev-sample') == 5 and "问题：24 + 1" in second
    assert "还没有样本。" in filtered


def test_an_active_runs_page_polls_its_progress(owner: Any, active_run: EvalRun) -> None:
    client = browser(owner)

    page = client.get(f"/evaluation/runs/{active_run.id}/").content.decode()
    data = client.get(f"/evaluation/runs/{active_run.id}/data.json").json()

    assert 'data-active="1"' in page and 'id="ev-cancel"' in page and 'value="25"' in page
    assert data["status"] == "running" and data["active"] is True
    assert data["percent"] == 25 and (data["done_samples"], data["total_samples"]) == (10, 40)
    assert data["status_label"] == "评测中"


def test_a_teammate_may_read_an_org_run_but_not_cancel_it(
    owner: Any, org: Any, teammate: Any, task: EvalTask
) -> None:
    run = owned(EvalRun, org, visibility="org", task=task, status=JobStatus.RUNNING)
    page = browser(teammate).get(f"/evaluation/runs/{run.id}/").content.decode()

    assert run.id in page and 'id="ev-cancel"' not in page


def test_cancel_is_a_post_that_cancels_the_run(owner: Any, active_run: EvalRun) -> None:
    client = browser(owner)

    assert client.get(f"/evaluation/runs/{active_run.id}/cancel/").status_code == 405
    response = client.post(f"/evaluation/runs/{active_run.id}/cancel/")

    assert response.status_code == 302
    active_run.refresh_from_db()
    assert active_run.cancel_requested or active_run.status == JobStatus.CANCELLED


def test_the_task_page_shows_its_yaml_and_suites(owner: Any, suite: EvalSuite) -> None:
    page = browser(owner).get("/evaluation/tasks/olivia/sums/").content.decode()

    assert "doc_to_text" in page and "问题：{{ question }}" in page
    assert "/evaluation/suites/olivia/basics/" in page and "exact_match" in page


def test_the_new_run_form_offers_only_readable_models_and_suites(
    owner: Any, outsider: Any, suite: EvalSuite
) -> None:
    model_repo(owner.user, "tiny", visibility="private")
    model_repo(outsider.user, "secret", visibility="private")
    owned(EvalSuite, outsider.user, name="hidden")

    page = browser(owner).get("/evaluation/runs/new/").content.decode()

    assert 'value="olivia/tiny"' in page and 'value="suite:olivia/basics"' in page
    assert 'value="task:olivia/sums"' in page
    assert "oscar/secret" not in page and "oscar/hidden" not in page


def test_the_new_run_form_starts_a_run(owner: Any, suite: EvalSuite) -> None:
    model_repo(owner.user, "tiny", visibility="private")
    data = {
        "target": "suite:olivia/basics",
        "model": "olivia/tiny",
        "limit": "5",
        "max_tokens": "",
        "temperature": "0",
        "seed": "7",
        "concurrency": "2",
        "batch_size": "4",
    }

    response = browser(owner).post("/evaluation/runs/new/", data)

    run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evaluation/runs/{run.id}/"
    assert run.suite == suite and run.model_name == "olivia/tiny"
    assert run.params["limit"] == 5 and run.params["seed"] == 7
    assert run.owner_user == owner.user


def test_the_new_run_form_refuses_what_the_user_may_not_read(
    owner: Any, outsider: Any, suite: EvalSuite
) -> None:
    model_repo(outsider.user, "secret", visibility="private")
    data = {
        "target": "suite:olivia/basics",
        "model": "oscar/secret",
        "temperature": "0",
        "seed": "1",
        "concurrency": "1",
        "batch_size": "1",
    }

    response = browser(owner).post("/evaluation/runs/new/", data)

    assert response.status_code == 200 and 'id="ev-field-model"' in response.content.decode()
    assert "ev-invalid" in response.content.decode() and not EvalRun.objects.exists()


def test_a_leaderboard_shows_standings_and_takes_submissions(
    owner: Any, suite: EvalSuite, run: EvalRun
) -> None:
    board = owned(Leaderboard, owner.user, visibility="public", name="board", suite=suite)
    second = finished_run(owner, suite, "olivia/other", 0.5)
    for r in (run, second):
        Submission.objects.create(
            leaderboard=board, model_name=r.model_name, run=r, status="finished"
        )
    model_repo(owner.user, "tiny", visibility="private")
    client = browser(owner)

    page = client.get(f"/evaluation/leaderboards/{board}/").content.decode()
    filtered = client.get(f"/evaluation/leaderboards/{board}/?license=mit").content.decode()
    response = client.post(f"/evaluation/leaderboards/{board}/submit/", {"model": "olivia/tiny"})

    assert page.index('data-model="olivia/tiny"') < page.index('data-model="olivia/other"')
    assert "0.7500" in page and 'id="ev-compare-form"' in page
    assert 'class="ev-standing"' not in filtered and "还没有上榜的模型。" in filtered
    assert response.status_code == 302
    assert board.submissions.filter(model_name="olivia/tiny").exclude(run=run).exists()


def test_the_comparison_shows_per_task_deltas(
    owner: Any, outsider: Any, suite: EvalSuite, run: EvalRun, task: EvalTask
) -> None:
    other = finished_run(owner, suite, "olivia/other", 0.5)
    for n in range(4):
        EvalSample.objects.create(
            run=other,
            task=task,
            doc_index=n,
            prompt=f"问题：{n} + 1 =",
            target=str(n + 1),
            extracted="0",
            metrics={"exact_match": 0.0},
        )

    response = browser(owner).get(f"/evaluation/compare/?a={run.id}&b={other.id}")
    page = response.content.decode()

    assert response.status_code == 200
    assert "-0.2500" in page and 'data-task="olivia/sums"' in page
    assert page.count('class="ev-flip"') == 3  # docs 1-3 were right in A, wrong in B
    assert "B 比 A 多答对 0 个、少答对 3 个" in page


def test_an_arena_hides_the_names_until_the_vote(owner: Any, outsider: Any) -> None:
    arena = owned(
        Arena, owner.user, visibility="public", name="ring", contenders=["acme/left", "acme/right"]
    )
    battle = Battle.objects.create(
        arena=arena,
        user=owner.user,
        model_a="acme/left",
        model_b="acme/right",
        prompt="你好",
        answer_a="甲的回答",
        answer_b="乙的回答",
    )
    client = browser(owner)
    url = f"/evaluation/arenas/{arena}/?battle={battle.id}"

    before = client.get(url).content.decode()
    vote = client.post(f"/evaluation/battles/{battle.id}/vote/", {"winner": "a"})
    after = client.get(url).content.decode()

    assert "甲的回答" in before and "乙的回答" in before
    assert "acme/left" not in before.split('id="ev-ratings"')[0]
    assert 'id="ev-vote-a"' in before
    assert vote.status_code == 302
    assert 'id="ev-model-a">acme/left<' in after and 'id="ev-vote-a"' not in after
    battle.refresh_from_db()
    assert battle.winner == "a"
    assert browser(outsider).get(url).status_code == 404  # someone else's battle
