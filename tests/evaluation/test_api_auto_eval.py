"""``auto_eval`` on ``POST /v1/fine_tuning/jobs`` (the SDK's ``extra_body``): the suite is
checked when the job is created and stored on it; and the card writer keeps one
``model-index`` result per task."""

from __future__ import annotations

from typing import Any

import pytest

from portal.models import ModelRepo
from portal.services.registry import record_eval_results
from tests.datasets.conftest import CHAT_JSONL, add_version
from tests.factories import deployment
from training.models import FineTuningJob

pytestmark = pytest.mark.django_db
JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def ready(owner: Any) -> None:
    from datasets.services.repos import create_repo

    deployment(owner.user, "pub")
    chat = create_repo(owner.user, owner.user, "chat", visibility="private")
    add_version(chat, owner.user, {"train.jsonl": CHAT_JSONL})


def create(actor: Any, **extra: Any) -> Any:
    body = {"model": "olivia/pub", "training_file": "olivia/chat", **extra}
    return actor.client().post(JOBS, body, format="json")


def test_fine_tune_with_auto_eval_stores_the_suite(ready: Any, owner: Any, suite: Any) -> None:
    response = create(owner, auto_eval="olivia/tiny-suite")

    assert response.status_code == 200, response.json()
    assert FineTuningJob.objects.get(pk=response.json()["id"]).auto_eval == "olivia/tiny-suite"


def test_fine_tune_naming_an_unknown_or_private_suite_is_a_404(
    ready: Any, owner: Any, outsider: Any, suite: Any
) -> None:
    unknown = create(owner, auto_eval="olivia/no-such-suite")

    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "auto_eval"
    assert not FineTuningJob.objects.exists()


def test_fine_tune_with_a_malformed_auto_eval_is_a_400(ready: Any, owner: Any) -> None:
    response = create(owner, auto_eval=["not", "a", "name"])

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "auto_eval"


def test_card_keeps_one_result_per_task_and_the_rest_of_the_card(owner: Any) -> None:
    version = deployment(owner.user, "pub").model_version
    repo = version.repo
    repo.card = "# pub\n\nA model.\n\n## Limits\n\nSmall."
    repo.card_data = {"license": "mit"}
    repo.save()

    def entry(value: float) -> dict[str, Any]:
        metric = {"type": "acc", "name": "acc", "value": value, "args": {"stderr": 0.1}}
        return {"task": {"type": "text-generation", "name": "ns/mc"}, "metrics": [metric]}

    record_eval_results(version, [entry(0.25)])
    record_eval_results(version, [entry(0.5)])

    repo = ModelRepo.objects.get(pk=repo.pk)
    results = repo.card_data["model-index"][0]["results"]
    assert [r["metrics"][0]["value"] for r in results] == [0.5]
    assert repo.card_data["license"] == "mit"
    assert repo.card.count("## Evaluation results") == 1
    assert "| ns/mc | acc | 0.5000 | 0.1000 |" in repo.card
    assert "## Limits" in repo.card and repo.card.startswith("# pub")
