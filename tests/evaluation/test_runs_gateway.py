"""Runs on a pool model, end to end on real parts: a live portal, a node agent serving
the tiny model, the gateway in between. A fine-tune created with ``auto_eval`` is
evaluated when it succeeds; the run goes through the gateway with a key of its own
(allowed only that model, revoked when the run ends) and its scores land in the model's
card as ``model-index``. Admission follows the gateway's rules: an outsider's run on a
private model is a 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compute.services import workloads
from evaluation.models import EvalRun, EvalSample, RunSource
from portal.models import APIKey, ModelRepo
from portal.models.jobs import JobStatus
from tests.evaluation.conftest import MC_ROWS, run_now, served_on_pool
from training.models import FineTuneStatus
from training.services import jobs

pytestmark = pytest.mark.e2e
MODEL = "olivia/tiny"


@pytest.fixture
def served(
    live_portal: str, tiny_model_dir: Path, owner: Any, admin: Any, tmp_path: Path, settings: Any
) -> Iterator[Any]:
    """olivia/tiny, private to olivia (who must exist before the import names her the
    owner), served by one replica on a real node agent; runs reach it through the live
    portal's gateway."""
    settings.EVAL_GATEWAY_URL = live_portal
    with served_on_pool(live_portal, tiny_model_dir, MODEL, "private", admin, tmp_path) as v:
        yield v


def test_auto_eval_of_a_fine_tune_runs_through_the_gateway_and_fills_the_card(
    served: Any, owner: Any, outsider: Any, suite: Any
) -> None:
    from datasets.services.repos import create_repo
    from tests.datasets.conftest import CHAT_JSONL, add_version

    chat = create_repo(owner.user, owner.user, "chat", visibility="private")
    add_version(chat, owner.user, {"train.jsonl": CHAT_JSONL})
    job = jobs.create_job(
        owner.user, model=MODEL, training_file="olivia/chat", auto_eval="olivia/tiny-suite"
    )
    assert job.auto_eval == "olivia/tiny-suite"
    workloads.stop(workloads.for_ref("training", job.id), "the test plays the trainer")
    # The trainer's part, which tests/training covers: the job runs and succeeds with a
    # model the gateway serves.
    assert job.transition(FineTuneStatus.RUNNING, "started")
    fields = {"fine_tuned_model": MODEL, "result_version": served}
    assert jobs.finish(job, FineTuneStatus.SUCCEEDED, "done", fields=fields)

    run = EvalRun.objects.get(fine_tuning_job_id=job.id)
    assert run.source == RunSource.AUTO_EVAL and run.model_name == MODEL
    run = run_now(run)

    assert run.status == JobStatus.SUCCEEDED, run.error
    assert EvalSample.objects.filter(run=run).count() == len(MC_ROWS) + 6
    assert not EvalSample.objects.filter(run=run).exclude(error="").exists()
    assert run.record["model"] == {
        "name": MODEL,
        "version": str(served),
        "revision": served.revision,
    }
    mc = run.scores["tasks"]["olivia/tiny-mc"]
    assert mc["acc"]["stderr"] is not None and run.scores["suite"]["score"] is not None
    key = APIKey.objects.get(pk=run.api_key_id)
    assert key.allowed_models == [MODEL] and key.revoked_at is not None
    assert run.api_key_encrypted == ""

    repo = ModelRepo.objects.get(namespace="olivia", name="tiny")
    results = repo.card_data["model-index"][0]["results"]
    by_task = {r["task"]["name"]: r for r in results}
    acc = next(m for m in by_task["olivia/tiny-mc"]["metrics"] if m["type"] == "acc")
    assert acc["value"] == pytest.approx(mc["acc"]["value"], abs=1e-6)
    assert "## Evaluation results" in repo.card and "olivia/tiny-add" in repo.card

    body = {"task": "olivia/tiny-mc", "model": MODEL}
    assert outsider.client().post("/api/evaluation/runs/", body, format="json").status_code == 404
