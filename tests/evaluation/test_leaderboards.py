"""Leaderboards: a submission goes pending → running (its own run of the board's suite)
→ finished | failed as that run ends, pending ones advance when a slot frees; standings
rank the finished ones with size, license and base-model filters (a fine-tune beside
its base); two runs compare per task and per sample; private boards are 404 to others."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from evaluation.models import (
    EvalRun,
    EvalSample,
    EvalSuite,
    EvalTask,
    Leaderboard,
    RunSource,
    Submission,
    SubmissionStatus,
    SuiteTask,
)
from evaluation.services import leaderboards
from evaluation.services.runs import finalize
from portal.models import ModelRepo, ModelVersion
from portal.models.jobs import JobStatus
from tests.factories import model_repo

TASK = "olivia/quiz"


@pytest.fixture(autouse=True)
def _hooked() -> None:
    # What EvaluationConfig.ready does in every process.
    leaderboards.connect()


@pytest.fixture
def suite(owner: Any) -> EvalSuite:
    task = EvalTask(name="quiz", output_type="multiple_choice", source="task: quiz")
    task.set_owner(owner.user)
    task.visibility = "public"
    task.save()
    suite = EvalSuite(name="basics", source="suite: basics", visibility="public")
    suite.set_owner(owner.user)
    suite.save()
    SuiteTask.objects.create(suite=suite, task=task)
    return suite


def board_of(owner: Any, suite: EvalSuite, visibility: str = "public") -> Leaderboard:
    return leaderboards.create_leaderboard(
        owner.user, owner.user, "open", suite, visibility=visibility
    )


def scores(score: float, acc: float | None = None) -> dict[str, Any]:
    acc = score if acc is None else acc
    task = {"acc": {"value": acc, "stderr": 0.05, "n": 4}, "n_errors": 0, "primary": "acc"}
    return {
        "tasks": {TASK: task},
        "suite": {"score": score, "stderr": 0.05, "aggregation": "macro", "weights": {}},
    }


def end_run(run: EvalRun, status: str, score: float = 0.5, error: str = "") -> None:
    """What the worker does: run, then reach a final state; then the finished hooks."""
    run.transition(JobStatus.RUNNING)
    fields: dict[str, Any] = {"scores": scores(score)} if status == JobStatus.SUCCEEDED else {}
    run.transition(status, error=error, **fields)
    finalize(run)


def test_a_submission_runs_the_suite_and_ranks_when_its_run_succeeds(
    owner: Any, outsider: Any, suite: EvalSuite
) -> None:
    board = board_of(owner, suite)
    model_repo(owner.user, "base")

    response = outsider.client().post(
        "/api/evaluation/leaderboards/olivia/open/submissions/",
        {"model": "olivia/base"},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "running"
    submission = Submission.objects.get()
    run = submission.run
    assert run is not None
    assert (run.source, run.suite, run.model_name) == (RunSource.LEADERBOARD, suite, "olivia/base")
    assert run.created_by == outsider.user

    end_run(run, JobStatus.SUCCEEDED, score=0.75)

    submission.refresh_from_db()
    assert submission.status == SubmissionStatus.FINISHED
    body = outsider.client().get("/api/evaluation/leaderboards/olivia/open/").json()
    (row,) = body["standings"]
    assert (row["rank"], row["model"], row["score"], row["run"]) == (1, "olivia/base", 0.75, run.pk)
    assert row["tasks"][TASK] == {"metric": "acc", "value": 0.75, "stderr": 0.05}
    assert body["submissions"] == 1
    assert leaderboards.standings(board)[0]["model"] == "olivia/base"


@override_settings(EVAL_LEADERBOARD_CONCURRENCY=1)
def test_pending_submissions_advance_when_a_run_slot_frees(owner: Any, suite: EvalSuite) -> None:
    board = board_of(owner, suite)
    model_repo(owner.user, "one")
    model_repo(owner.user, "two")

    first = leaderboards.submit(owner.user, board, "olivia/one")
    second = leaderboards.submit(owner.user, board, "olivia/two")

    assert (first.status, second.status) == (SubmissionStatus.RUNNING, SubmissionStatus.PENDING)
    assert second.run is None
    assert first.run is not None

    end_run(first.run, JobStatus.FAILED, error="endpoint_unreachable: no replica")

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == SubmissionStatus.FAILED
    assert "no replica" in first.error
    assert second.status == SubmissionStatus.RUNNING
    assert second.run is not None and second.run.model_name == "olivia/two"
    assert leaderboards.standings(board) == []


def test_a_model_already_queued_or_unreadable_is_refused(
    owner: Any, outsider: Any, suite: EvalSuite
) -> None:
    board_of(owner, suite)
    model_repo(owner.user, "base")
    model_repo(owner.user, "secret", visibility="private")
    client = owner.client()
    url = "/api/evaluation/leaderboards/olivia/open/submissions/"

    assert client.post(url, {"model": "olivia/base"}, format="json").status_code == 201
    again = client.post(url, {"model": "olivia/base"}, format="json")
    hidden = outsider.client().post(url, {"model": "olivia/secret"}, format="json")

    assert again.status_code == 409
    assert hidden.status_code == 404
    assert client.get(url).json()["count"] == 1


def ranked(board: Leaderboard, version: ModelVersion, score: float) -> EvalRun:
    """A finished submission of ``version`` with a succeeded run scoring ``score``."""
    run = EvalRun.objects.create(
        owner_user=board.owner_user,
        namespace=board.namespace,
        suite=board.suite,
        model_name=version.repo.full_name,
        model_version=version,
        status=JobStatus.SUCCEEDED,
        scores=scores(score),
    )
    Submission.objects.create(
        leaderboard=board,
        model_name=version.repo.full_name,
        model_version=version,
        run=run,
        status=SubmissionStatus.FINISHED,
    )
    return run


def hub_model(owner: Any, name: str, license: str, weights: int, **fields: Any) -> ModelVersion:
    repo = ModelRepo(name=name, visibility="public", license=license)
    repo.set_owner(owner.user)
    repo.save()
    return ModelVersion.objects.create(
        repo=repo,
        number=1,
        revision="0" * 64,
        config={"torch_dtype": "float32"},
        total_bytes=4 * weights,
        **fields,
    )


def test_a_fine_tune_ranks_beside_its_base_and_filters_narrow_the_ranking(
    owner: Any, suite: EvalSuite
) -> None:
    board = board_of(owner, suite)
    base = hub_model(owner, "base", "apache-2.0", 1_000_000)
    tuned = hub_model(owner, "base-ft", "", 4_000, base_version=base)
    other = hub_model(owner, "big", "mit", 7_000_000_000)
    ranked(board, base, 0.5)
    ranked(board, tuned, 0.7)
    ranked(board, other, 0.9)
    url = "/api/evaluation/leaderboards/olivia/open/"
    client = owner.client()

    family = client.get(url, {"base_model": "olivia/base"}).json()["standings"]
    small = client.get(url, {"max_params": 2_000_000}).json()["standings"]
    mit = client.get(url, {"license": "MIT"}).json()["standings"]
    everyone = client.get(url).json()["standings"]

    assert [(r["rank"], r["model"]) for r in family] == [(1, "olivia/base-ft"), (2, "olivia/base")]
    tuned_row = family[0]
    # An adapter runs on its base's weights, under its base's license.
    assert (tuned_row["base_model"], tuned_row["params_size"]) == ("olivia/base", 1_000_000)
    assert tuned_row["license"] == "apache-2.0"
    assert {r["model"] for r in small} == {"olivia/base", "olivia/base-ft"}
    assert [r["model"] for r in mit] == ["olivia/big"]
    assert [r["model"] for r in everyone] == ["olivia/big", "olivia/base-ft", "olivia/base"]
    assert client.get(url, {"min_params": -1}).status_code == 400


def sample(run: EvalRun, task: EvalTask, doc: int, acc: float, answer: str) -> EvalSample:
    return EvalSample.objects.create(
        run=run,
        task=task,
        doc_index=doc,
        prompt=f"Q{doc}",
        target=0,
        extracted=answer,
        metrics={"acc": acc},
    )


def test_two_runs_compare_per_task_and_per_sample(owner: Any, suite: EvalSuite) -> None:
    board = board_of(owner, suite)
    run_a = ranked(board, hub_model(owner, "a", "mit", 10), 0.5)
    run_b = ranked(board, hub_model(owner, "b", "mit", 10), 0.75)
    task = EvalTask.objects.get()
    for doc, (acc_a, acc_b) in enumerate([(1, 1), (0, 1), (1, 0), (0, 1), (0, 0)]):
        sample(run_a, task, doc, acc_a, "A" if acc_a else "B")
        sample(run_b, task, doc, acc_b, "A" if acc_b else "B")
    sample(run_a, task, 9, 1, "A")  # scored by a only: not compared

    response = owner.client().get("/api/evaluation/compare/", {"a": run_a.pk, "b": run_b.pk})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["suite"] == {"a": 0.5, "b": 0.75, "delta": 0.25}
    (compared,) = body["tasks"]
    assert compared["task"] == TASK
    assert compared["metrics"]["acc"] == {"a": 0.5, "b": 0.75, "delta": 0.25}
    assert (compared["n_common"], compared["gained"], compared["lost"]) == (5, 2, 1)
    assert compared["p_value"] == pytest.approx(1.0)
    assert [s["doc_index"] for s in compared["samples"]] == [1, 2, 3]
    flip = compared["samples"][0]
    assert (flip["a"]["extracted"], flip["b"]["extracted"]) == ("B", "A")
    assert (flip["a"]["value"], flip["b"]["value"]) == (0.0, 1.0)


def test_outsider_gets_404_for_a_private_leaderboard_and_its_runs(
    owner: Any, outsider: Any, suite: EvalSuite
) -> None:
    board = board_of(owner, suite, visibility="private")
    run_a = ranked(board, hub_model(owner, "a", "mit", 10), 0.5)
    run_b = ranked(board, hub_model(owner, "b", "mit", 10), 0.6)
    client = outsider.client()
    base = "/api/evaluation/leaderboards/olivia/open/"

    assert client.get("/api/evaluation/leaderboards/").json()["count"] == 0
    assert client.get(base).status_code == 404
    assert client.get(base + "submissions/").status_code == 404
    assert (
        client.post(base + "submissions/", {"model": "olivia/a"}, format="json").status_code == 404
    )
    assert client.delete(base).status_code == 404
    compare = client.get("/api/evaluation/compare/", {"a": run_a.pk, "b": run_b.pk})
    assert compare.status_code == 404

    # Once the ranking is public, its runs may be compared by anyone.
    Leaderboard.objects.filter(pk=board.pk).update(visibility="public")
    assert client.get("/api/evaluation/compare/", {"a": run_a.pk, "b": run_b.pk}).status_code == 200


def test_creating_a_leaderboard_checks_name_owner_and_suite(
    owner: Any, teammate: Any, org: Any, suite: EvalSuite
) -> None:
    client = teammate.client()
    url = "/api/evaluation/leaderboards/"
    good = {"name": "zh-open", "suite": "olivia/basics"}

    created = owner.client().post(url, {**good, "owner": "acme-lab"}, format="json")
    as_member = client.post(url, {**good, "owner": "acme-lab", "name": "x"}, format="json")
    bad_name = client.post(url, {**good, "name": "-bad"}, format="json")
    no_suite = client.post(url, {**good, "suite": "olivia/none"}, format="json")
    taken = owner.client().post(url, {**good, "owner": "acme-lab"}, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["id"] == "acme-lab/zh-open"
    assert created.json()["standings"] == []
    assert as_member.status_code == 403  # a member may not publish under the organisation
    assert (bad_name.status_code, no_suite.status_code, taken.status_code) == (400, 404, 409)
