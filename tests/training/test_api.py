"""``/v1/fine_tuning/jobs`` with the official ``openai`` SDK against the real server:
object shapes, paging, cancel, events; and every bad request as an OpenAI-shaped 4xx
that submits nothing to the pool."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import pytest

from compute.models import Workload
from datasets.models import DatasetVersion, VersionState
from portal.models import UserBudget
from portal.services.keys import create_api_key
from tests.datasets.conftest import CHAT_JSONL, run_queued_jobs
from tests.factories import model_repo
from tests.training.conftest import workload_of
from training.models import FineTuningJob


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=30)


@pytest.fixture
def olivia(live_portal: str, owner: Any) -> openai.OpenAI:
    return sdk(live_portal, owner.key)


def test_sdk_creates_a_job_in_openais_shape_and_queues_a_workload(
    olivia: openai.OpenAI, base_model: Any, chat_dataset: Any
) -> None:
    job = olivia.fine_tuning.jobs.create(
        model="olivia/tiny",
        training_file="olivia/chat",
        suffix="support",
        seed=7,
        metadata={"team": "support"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )

    assert job.object == "fine_tuning.job"
    assert job.id.startswith("ftjob-") and len(job.id) == 30
    assert job.status == "queued"
    assert job.model == "olivia/tiny" and job.training_file == "olivia/chat"
    assert job.seed == 7 and job.metadata == {"team": "support"}
    assert job.hyperparameters.n_epochs == 2
    assert job.hyperparameters.batch_size == 1  # auto, three rows
    assert job.method is not None and job.method.type == "supervised"
    assert job.fine_tuned_model is None and job.result_files == []
    workload = workload_of(job.id)
    assert workload.kind == "training" and workload.model_version_id == base_model.pk
    events = [e.message for e in olivia.fine_tuning.jobs.list_events(job.id).data]
    assert "Fine-tuning job queued" in events and "Validated the training files" in events


def test_list_pages_newest_first_and_filters_by_metadata(
    olivia: openai.OpenAI, base_model: Any, chat_dataset: Any
) -> None:
    made = [
        olivia.fine_tuning.jobs.create(
            model="olivia/tiny", training_file="olivia/chat", metadata={"n": str(n)}
        ).id
        for n in range(3)
    ]

    first = olivia.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == made[::-1][:2] and first.has_more
    rest = olivia.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert [j.id for j in rest.data] == [made[0]] and not rest.has_more
    assert olivia.fine_tuning.jobs.retrieve(made[1]).id == made[1]
    only = olivia.fine_tuning.jobs.list(metadata={"n": "1"})
    assert [j.id for j in only.data] == [made[1]]


def test_cancelling_a_queued_job_stops_its_workload_and_frees_a_slot(
    olivia: openai.OpenAI, base_model: Any, chat_dataset: Any
) -> None:
    job = olivia.fine_tuning.jobs.create(model="olivia/tiny", training_file="olivia/chat")

    cancelled = olivia.fine_tuning.jobs.cancel(job.id)

    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert workload_of(job.id).status == "stopped"
    version = DatasetVersion.objects.get(repo=chat_dataset)
    assert not version.uses.filter(active=True).exists()
    with pytest.raises(openai.BadRequestError):
        olivia.fine_tuning.jobs.cancel(job.id)


def test_events_page_newest_first(
    olivia: openai.OpenAI, base_model: Any, chat_dataset: Any
) -> None:
    job = olivia.fine_tuning.jobs.create(model="olivia/tiny", training_file="olivia/chat")
    olivia.fine_tuning.jobs.cancel(job.id)

    every = olivia.fine_tuning.jobs.list_events(job.id, limit=100).data
    first = olivia.fine_tuning.jobs.list_events(job.id, limit=2)
    rest = olivia.fine_tuning.jobs.list_events(job.id, limit=100, after=first.data[-1].id)

    assert len(every) >= 4 and every[0].message == "Fine-tuning job cancelled"
    assert [e.id for e in first.data + rest.data] == [e.id for e in every]
    assert first.has_more and not rest.has_more
    assert all(e.object == "fine_tuning.job.event" and e.type == "message" for e in every)


def test_a_file_still_being_validated_waits_and_its_ingest_queues_the_job(
    olivia: openai.OpenAI, base_model: Any
) -> None:
    file = olivia.files.create(
        file=("train.jsonl", io.BytesIO(CHAT_JSONL.encode())), purpose="fine-tune"
    )
    job = olivia.fine_tuning.jobs.create(model="olivia/tiny", training_file=file.id)
    assert job.status == "validating_files" and workload_of(job.id) is None

    run_queued_jobs()  # the ingest settles the file; its hook moves the job on

    assert olivia.fine_tuning.jobs.retrieve(job.id).status == "queued"
    assert workload_of(job.id) is not None


def test_a_file_that_fails_validation_later_fails_the_waiting_job(
    olivia: openai.OpenAI, base_model: Any
) -> None:
    from training.tasks import advance_waiting_jobs

    file = olivia.files.create(
        file=("train.jsonl", io.BytesIO(b'{"nope": 1}\n')), purpose="fine-tune"
    )
    job = olivia.fine_tuning.jobs.create(model="olivia/tiny", training_file=file.id)

    run_queued_jobs()
    advance_waiting_jobs()  # the beat task: nothing left to do after the hook

    failed = olivia.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "invalid_training_file" and failed.error.param == "training_file"
    assert workload_of(job.id) is None


# --- refusals -------------------------------------------------------------------------


def refused(url: str, key: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/fine_tuning/jobs", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


BASE = {"model": "olivia/tiny", "training_file": "olivia/chat"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
        (
            {"hyperparameters": {"learning_rate_multiplier": 0}},
            "hyperparameters.learning_rate_multiplier",
        ),
        ({"hyperparameters": {"n_epochs": "many"}}, "hyperparameters.n_epochs"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}},
            "hyperparameters.beta",
        ),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"adapter": {"type": "lora", "r": 0}}, "adapter.r"),
        ({"adapter": {"type": "lora", "r": 128}}, "adapter.r"),
        ({"adapter": {"type": "lora", "dropout": 1}}, "adapter.dropout"),
        ({"adapter": {"type": "lora", "alpha": -1}}, "adapter.alpha"),
        ({"adapter": {"target_modules": ["x"] * 33}}, "adapter.target_modules"),
        ({"gpus": 9}, "gpus"),
        ({"priority": 11}, "priority"),
        ({"suffix": "Not Valid!"}, "suffix"),
        ({"metadata": {str(n): "v" for n in range(17)}}, "metadata"),
        ({"training_file": ""}, "training_file"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_settings_are_400_naming_the_param(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any, extra: dict, param: str
) -> None:
    error = refused(live_portal, owner.key, {**BASE, **extra}, 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert not Workload.objects.exists() and not FineTuningJob.objects.exists()


def test_unknown_or_other_tenants_models_and_files_are_404(
    live_portal: str, owner: Any, outsider: Any, base_model: Any, chat_dataset: Any
) -> None:
    from datasets.services.repos import create_repo
    from tests.datasets.conftest import add_version

    theirs = create_repo(outsider.user, outsider.user, "secret")
    add_version(theirs, outsider.user, {"train.jsonl": CHAT_JSONL})
    oscar_file = sdk(live_portal, outsider.key).files.create(
        file=("t.jsonl", io.BytesIO(CHAT_JSONL.encode())), purpose="fine-tune"
    )

    assert (
        refused(live_portal, owner.key, {**BASE, "model": "olivia/nope"}, 404)["param"] == "model"
    )
    assert (
        refused(live_portal, owner.key, {**BASE, "model": "olivia/tiny@9"}, 404)["code"]
        == "model_not_found"
    )
    assert (
        refused(live_portal, outsider.key, {**BASE, "training_file": "oscar/secret"}, 404)["param"]
        == "model"
    )
    for training_file in ("oscar/secret", oscar_file.id, "file-000000000000000000000000"):
        error = refused(live_portal, owner.key, {**BASE, "training_file": training_file}, 404)
        assert error["param"] == "training_file"
    assert not Workload.objects.exists() and not FineTuningJob.objects.exists()


def test_invalid_dataset_and_wrong_layout_are_400(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    from datasets.services.repos import create_repo
    from tests.datasets.conftest import add_version

    broken = create_repo(owner.user, owner.user, "broken")
    add_version(broken, owner.user, {"train.jsonl": '{"messages": "not a list"}\n'})
    assert DatasetVersion.objects.get(repo=broken).state == VersionState.INVALID

    error = refused(live_portal, owner.key, {**BASE, "training_file": "olivia/broken"}, 400)
    assert error["code"] == "invalid_training_file" and "Line 1" in error["message"]
    dpo = {**BASE, "method": {"type": "dpo"}}
    error = refused(live_portal, owner.key, dpo, 400)
    assert error["code"] == "invalid_training_file" and "preference" in error["message"]
    assert not Workload.objects.exists() and not FineTuningJob.objects.exists()


def test_a_never_completed_upload_is_400(live_portal: str, owner: Any, base_model: Any) -> None:
    from datasets.services.repos import create_repo
    from datasets.services.versions import start_upload

    repo = create_repo(owner.user, owner.user, "halfway")
    start_upload(repo, owner.user, [("train.jsonl", 100)])

    error = refused(live_portal, owner.key, {**BASE, "training_file": "olivia/halfway@1"}, 400)
    assert error["param"] == "training_file" and "never completed" in error["message"]
    assert not FineTuningJob.objects.exists()


def test_an_adapter_as_base_is_refused(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    adapter = model_repo(owner.user, "tiny-lora", visibility="private")
    adapter.versions.update(base_version=base_model)

    error = refused(live_portal, owner.key, {**BASE, "model": "olivia/tiny-lora"}, 400)
    assert error["code"] == "invalid_model" and error["param"] == "model"


def test_over_the_active_job_limit_is_429_and_submits_nothing(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any, settings: Any
) -> None:
    settings.FINE_TUNING_MAX_ACTIVE_JOBS = 1
    olivia = sdk(live_portal, owner.key)
    olivia.fine_tuning.jobs.create(**BASE)

    with pytest.raises(openai.RateLimitError) as limited:
        olivia.fine_tuning.jobs.create(**BASE)

    assert limited.value.body["code"] == "rate_limit_exceeded"
    assert Workload.objects.count() == 1 and FineTuningJob.objects.count() == 1


def test_more_gpus_than_allowed_is_429(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any, settings: Any
) -> None:
    settings.FINE_TUNING_MAX_GPUS = 2
    error = refused(live_portal, owner.key, {**BASE, "gpus": 4}, 429)
    assert error["code"] == "quota_exceeded" and error["param"] == "gpus"


def test_over_the_monthly_token_budget_is_429_and_submits_nothing(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    UserBudget.objects.create(user=owner.user, monthly_token_budget=50)

    error = refused(live_portal, owner.key, BASE, 429)

    assert error["code"] == "quota_exceeded" and "token budget" in error["message"]
    assert not Workload.objects.exists() and not FineTuningJob.objects.exists()


def test_keys_need_the_fine_tuning_scopes(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    _, reader = create_api_key(owner.user, scopes=["fine_tuning:read"])
    _, inference = create_api_key(owner.user, scopes=["inference"])

    assert sdk(live_portal, reader).fine_tuning.jobs.list().data == []
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(live_portal, reader).fine_tuning.jobs.create(**BASE)
    assert denied.value.body["code"] == "insufficient_scope"
    with pytest.raises(openai.PermissionDeniedError):
        sdk(live_portal, inference).fine_tuning.jobs.list()
    assert not Workload.objects.exists() and not FineTuningJob.objects.exists()


def test_outsider_gets_404_for_the_owners_job(
    live_portal: str, owner: Any, outsider: Any, base_model: Any, chat_dataset: Any
) -> None:
    job = sdk(live_portal, owner.key).fine_tuning.jobs.create(**BASE)
    oscar = sdk(live_portal, outsider.key)

    for call in (
        lambda: oscar.fine_tuning.jobs.retrieve(job.id),
        lambda: oscar.fine_tuning.jobs.cancel(job.id),
        lambda: oscar.fine_tuning.jobs.list_events(job.id),
        lambda: oscar.fine_tuning.jobs.checkpoints.list(job.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert oscar.fine_tuning.jobs.list().data == []
    assert FineTuningJob.objects.get().status == "queued"
