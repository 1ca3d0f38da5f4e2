"""Runs on a real engine of the tiny model (reached as an endpoint): per-sample rows,
scores with bootstrap standard errors and the reproducibility record; equal re-runs;
resume after a lost attempt without redoing samples; cancel; and each way a run can
fail — unreachable endpoint, a model answering garbage, data of the wrong shape — ends
the run with a clear error, never a crash."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from compute.agent.procs import free_port, wait_for
from evaluation.models import EvalRun, EvalSample
from evaluation.services import catalog, endpoints, runs
from portal import jobs
from portal.jobs import JobContext, JobLost, requeue_stale
from portal.models.jobs import JobStatus
from tests.evaluation.conftest import GEN_TASK, MC_ROWS, MC_TASK

pytestmark = pytest.mark.django_db(transaction=True)
Finish = Callable[[EvalRun], EvalRun]
RUNS = "/api/evaluation/runs/"


def start(owner: Any, endpoint: Any, **given: Any) -> EvalRun:
    return runs.start_run(owner.user, endpoint=endpoint, **given)


def test_a_suite_run_scores_every_sample_with_stderr_and_a_record(
    owner: Any, suite: Any, engine_endpoint: Any, finish: Finish
) -> None:
    response = owner.client().post(
        RUNS, {"suite": "olivia/tiny-suite", "endpoint": "olivia/tiny"}, format="json"
    )
    assert response.status_code == 202, response.json()
    run = finish(EvalRun.objects.get(pk=response.json()["id"]))

    assert run.status == JobStatus.SUCCEEDED, run.error
    assert run.progress == 1.0
    assert run.total_samples == run.done_samples == len(MC_ROWS) + 6
    mc = run.scores["tasks"]["olivia/tiny-mc"]
    assert mc["primary"] == "acc" and mc["acc"]["n"] == len(MC_ROWS)
    assert 0.0 <= mc["acc"]["value"] <= 1.0 and mc["acc"]["stderr"] is not None
    assert "acc_norm" in mc and mc["n_errors"] == 0
    gen = run.scores["tasks"]["olivia/tiny-add"]
    assert gen["primary"] == "exact_match" and gen["exact_match"]["n"] == 6
    overall = run.scores["suite"]
    assert overall["aggregation"] == "weighted"
    assert overall["weights"] == pytest.approx({"olivia/tiny-mc": 1 / 3, "olivia/tiny-add": 2 / 3})
    assert run.record["model"] == {"endpoint": engine_endpoint.base_url, "model": "tiny-llama"}
    task_record = run.record["tasks"]["olivia/tiny-mc"]
    assert len(task_record["spec_sha256"]) == len(task_record["data_sha256"]) == 64
    assert task_record["template"].startswith("Question:") and task_record["n_docs"] == 12
    assert run.record["decoding"]["temperature"] == 0.0 and run.record["platform_version"]

    samples = owner.client().get(RUNS + run.pk + "/samples/", {"task": "olivia/tiny-mc"}).json()
    assert samples["count"] == len(MC_ROWS)
    first = samples["results"][0]
    assert first["prompt"].startswith("Question: What do people use")
    assert set(first["metrics"]) >= {"acc", "acc_norm"} and first["target"] in (1, "1")
    events = owner.client().get(RUNS + run.pk + "/events/").json()["results"]
    assert [e["new_status"] for e in events if e["new_status"]] == ["running", "succeeded"]


def test_the_same_run_again_gives_identical_scores(
    owner: Any, mc_task: Any, engine_endpoint: Any, finish: Finish
) -> None:
    first = finish(start(owner, engine_endpoint, task=mc_task, params={"batch_size": 4}))
    second = finish(start(owner, engine_endpoint, task=mc_task, params={"batch_size": 3}))

    assert first.status == second.status == JobStatus.SUCCEEDED
    assert first.scores == second.scores
    assert first.record["tasks"] == second.record["tasks"]


class LoseAfterFirstChunk(JobContext):
    """A heartbeat that finds the job taken from it once some samples are stored: what a
    worker presumed dead sees when it wakes up."""

    def progress(self, fraction: float, *, force: bool = False) -> None:
        if EvalSample.objects.filter(run_id=self.job.pk).exists():
            raise JobLost
        super().progress(fraction, force=force)


def test_a_resumed_run_skips_stored_samples_and_scores_as_an_uninterrupted_one(
    owner: Any, engine_endpoint: Any, finish: Finish
) -> None:
    # Samples are handed over every couple of seconds: forty generations take longer.
    text = GEN_TASK.format(name="resume-add", limit=40)
    task = catalog.create_task(owner.user, owner.user, text, "private")
    params = {"batch_size": 1, "concurrency": 1}
    reference = finish(start(owner, engine_endpoint, task=task, params=params))
    run = start(owner, engine_endpoint, task=task, params=params)
    assert run.transition(JobStatus.RUNNING, "started", attempts=1)

    with pytest.raises(JobLost):
        runs.handle(run, LoseAfterFirstChunk(run))
    kept = EvalSample.objects.filter(run=run).count()
    assert 0 < kept < 40
    EvalRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert requeue_stale(EvalRun, 60) == [run.pk]
    run = finish(run)

    assert run.status == JobStatus.SUCCEEDED, run.error
    assert run.attempts == 2
    assert EvalSample.objects.filter(run=run).count() == 40
    assert run.scores == reference.scores
    assert run.events.filter(message__contains=f"{kept} samples already stored").exists()


def test_cancelling_a_running_run_stops_it_and_keeps_its_samples(
    owner: Any,
    gen_task: Any,
    engine_endpoint: Any,
    finish: Finish,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sixty answers of 64 tokens each, and the handler looks for a cancel every 50 ms
    # rather than every 2 s: on a fast machine the whole run takes about 2 s.
    monkeypatch.setattr(jobs, "HEARTBEAT_EVERY_S", 0.05)
    longer = GEN_TASK.format(name="long-add", limit=60)
    longer = longer.replace('max_tokens: 8, until: ["\\n"]', 'max_tokens: 64, until: ["@@@"]')
    assert "max_tokens: 64" in longer
    task = catalog.create_task(owner.user, owner.user, longer, "private")
    run = start(owner, engine_endpoint, task=task, params={"batch_size": 1, "concurrency": 1})

    def cancel_once_started() -> None:
        try:
            wait_for(
                lambda: EvalSample.objects.filter(run_id=run.pk).exists(),
                timeout_s=120,
                what="a first sample",
                interval_s=0.02,
            )
            response = owner.client().post(RUNS + run.pk + "/cancel/")
            assert response.status_code == 200, response.json()
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_once_started)
    canceller.start()
    run = finish(run)
    canceller.join(30)

    assert run.status == JobStatus.CANCELLED
    kept = EvalSample.objects.filter(run=run).count()
    assert 0 < kept < 60
    again = owner.client().post(RUNS + run.pk + "/cancel/")
    assert again.status_code == 409


def test_cancelling_a_queued_run_ends_it_at_once(
    owner: Any, mc_task: Any, engine_endpoint: Any, finish: Finish
) -> None:
    run = start(owner, engine_endpoint, task=mc_task)

    response = owner.client().post(RUNS + run.pk + "/cancel/")

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert finish(run).status == JobStatus.CANCELLED
    assert not EvalSample.objects.filter(run=run).exists()


def test_an_unreachable_endpoint_fails_the_run_with_a_clear_error(
    owner: Any, mc_task: Any, finish: Finish
) -> None:
    closed = endpoints.create_endpoint(
        owner.user, owner.user, "closed", f"http://127.0.0.1:{free_port()}/v1", "m", "k"
    )

    run = finish(start(owner, closed, task=mc_task))

    assert run.status == JobStatus.FAILED
    assert run.error_code == "endpoint_unreachable"
    assert "127.0.0.1" in run.error or "reach" in run.error.lower()


def test_a_model_answering_garbage_fails_the_run_clearly(
    owner: Any, mc_task: Any, garbage_url: str, finish: Finish
) -> None:
    garbage = endpoints.create_endpoint(owner.user, owner.user, "garbage", garbage_url, "m", "k")

    run = finish(start(owner, garbage, task=mc_task))

    assert run.status == JobStatus.FAILED
    assert run.error_code == "bad_response", run.error
    assert run.error and "Internal error" not in run.error


def test_a_dataset_of_the_wrong_shape_fails_the_run_with_the_data_error(
    owner: Any, engine_endpoint: Any, finish: Finish
) -> None:
    from datasets.services.repos import create_repo
    from tests.datasets.conftest import add_version

    repo = create_repo(owner.user, owner.user, "bad-mc", visibility="private")
    # Plain text rows: a fine dataset, but no multiple-choice documents.
    add_version(repo, owner.user, {"test.jsonl": '{"text": "just some text"}\n'})
    text = MC_TASK.format(name="bad-mc", dataset="olivia/bad-mc@1")
    task = catalog.create_task(owner.user, owner.user, text, "private")

    run = finish(start(owner, engine_endpoint, task=task))

    assert run.status == JobStatus.FAILED
    assert run.error_code == "invalid_dataset"
    assert "line 1" in run.error and "question" in run.error


def test_outsider_gets_404_for_a_private_run_and_cannot_use_anothers_endpoint(
    owner: Any, outsider: Any, mc_task: Any, engine_endpoint: Any
) -> None:
    run = start(owner, engine_endpoint, task=mc_task)
    client = outsider.client()

    assert client.get(RUNS + run.pk + "/").status_code == 404
    assert client.get(RUNS + run.pk + "/samples/").status_code == 404
    assert client.post(RUNS + run.pk + "/cancel/").status_code == 404
    assert client.get(RUNS).json()["results"] == []
    body = {"task": "olivia/tiny-mc", "endpoint": "olivia/tiny"}
    assert client.post(RUNS, body, format="json").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"task": "olivia/tiny-mc"},
        {"task": "olivia/tiny-mc", "suite": "olivia/x", "endpoint": "olivia/tiny"},
        {"task": "olivia/tiny-mc", "endpoint": "olivia/tiny", "params": {"batch_size": 0}},
        {"task": "olivia/tiny-mc", "endpoint": "olivia/tiny", "params": {"beams": 4}},
        {"task": "olivia/tiny-mc", "endpoint": "olivia/tiny", "params": [1]},
    ],
)
def test_a_run_request_that_does_not_add_up_is_a_400(
    owner: Any, mc_task: Any, engine_endpoint: Any, body: dict[str, Any]
) -> None:
    response = owner.client().post(RUNS, body, format="json")

    assert response.status_code == 400, response.json()
    assert not EvalRun.objects.exists()


def test_a_model_the_user_may_not_read_is_a_404(owner: Any, outsider: Any, mc_task: Any) -> None:
    response = owner.client().post(
        RUNS, {"task": "olivia/tiny-mc", "model": "oscar/secret"}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"


def test_past_the_active_run_limit_a_new_run_is_a_429(
    owner: Any, mc_task: Any, engine_endpoint: Any, settings: Any
) -> None:
    settings.EVAL_MAX_ACTIVE_RUNS = 1
    body = {"task": "olivia/tiny-mc", "endpoint": "olivia/tiny"}
    client = owner.client()

    assert client.post(RUNS, body, format="json").status_code == 202
    assert client.post(RUNS, body, format="json").status_code == 429


def test_the_sweep_requeues_a_silent_run_and_finalises_ended_ones(
    owner: Any, mc_task: Any, engine_endpoint: Any, settings: Any
) -> None:
    from evaluation.tasks import sweep_runs

    silent = start(owner, engine_endpoint, task=mc_task)
    assert silent.transition(JobStatus.RUNNING, "started", attempts=1)
    ended = start(owner, engine_endpoint, task=mc_task)
    assert ended.transition(JobStatus.FAILED, "its worker gave up", error="Gave up.")
    EvalRun.objects.filter(pk=silent.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    sweep_runs()

    silent.refresh_from_db()
    ended.refresh_from_db()
    assert silent.status == JobStatus.QUEUED and silent.progress == 0.0
    assert ended.result.get("finalized") is True
    assert not runs.finalize(ended)  # once only
