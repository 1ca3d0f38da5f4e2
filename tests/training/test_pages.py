"""The fine-tuning pages: the job list is the user's own, another's job is a 404, the
create form shows the service's errors on their fields, cancel is a POST, and the page's
JSON carries the status, progress, loss points, events and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from datasets.services.files import create_file
from datasets.services.repos import create_repo
from tests.datasets.conftest import add_version, run_queued_jobs
from tests.factories import model_repo
from training.models import FineTuneStatus, FineTuningCheckpoint, FineTuningEvent, FineTuningJob
from training.services.jobs import create_job

pytestmark = pytest.mark.django_db
BASE = "olivia/tiny-base"
ROWS = [
    {"messages": [{"role": "user", "content": f"问题 {n}"}, {"role": "assistant", "content": "好"}]}
    for n in range(4)
]


@pytest.fixture
def base(owner: Any) -> str:
    model_repo(owner.user, "tiny-base", visibility="private")
    return BASE


@pytest.fixture
def chat_data(owner: Any) -> str:
    repo = create_repo(owner.user, owner.user, "chat", visibility="private")
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ROWS)
    version = add_version(repo, owner.user, {"train.jsonl": text})
    assert version.state == "ready", version.report
    return f"olivia/chat@{version.number}"


@pytest.fixture
def job(owner: Any, base: str, chat_data: str) -> FineTuningJob:
    return create_job(owner.user, model=base, training_file=chat_data, suffix="first")


def browser(actor: Any) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def form_data(base: str, data: str, **changes: Any) -> dict[str, Any]:
    values = {
        "model": base,
        "training_file": data,
        "validation_file": "",
        "method": "supervised",
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "beta": "auto",
        "adapter_type": "lora",
        "lora_r": "8",
        "lora_alpha": "16",
        "lora_dropout": "0",
        "lora_target_modules": "q_proj, v_proj",
        "suffix": "",
        "seed": "",
    }
    return {**values, **changes}


def test_the_list_shows_only_the_users_own_jobs(
    owner: Any, outsider: Any, job: FineTuningJob
) -> None:
    mine = browser(owner).get("/fine-tuning/")
    theirs = browser(outsider).get("/fine-tuning/")

    assert mine.status_code == 200 and job.id in mine.content.decode()
    assert theirs.status_code == 200 and job.id not in theirs.content.decode()


def test_the_pages_need_a_sign_in(job: FineTuningJob) -> None:
    for path in ("/fine-tuning/", "/fine-tuning/new/", f"/fine-tuning/{job.id}/"):
        response = Client().get(path)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_outsider_gets_404_for_another_users_job(outsider: Any, job: FineTuningJob) -> None:
    client = browser(outsider)

    assert client.get(f"/fine-tuning/{job.id}/").status_code == 404
    assert client.get(f"/fine-tuning/{job.id}/data.json").status_code == 404
    assert client.post(f"/fine-tuning/{job.id}/cancel/").status_code == 404
    job.refresh_from_db()
    assert job.status in FineTuningJob.active_statuses


def test_the_form_offers_readable_models_and_ready_data(
    owner: Any, outsider: Any, base: str, chat_data: str
) -> None:
    model_repo(outsider.user, "secret-base", visibility="private")

    page = browser(owner).get("/fine-tuning/new/").content.decode()

    assert f'value="{base}"' in page and "oscar/secret-base" not in page
    assert f'value="{chat_data}"' in page
    assert 'value="auto"' in page and 'name="lora_r" value="8"' in page


def test_the_form_offers_the_users_processed_fine_tune_files(
    owner: Any, outsider: Any, tmp_path: Path
) -> None:
    path = tmp_path / "upload.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    mine = create_file(owner.user, path, "upload.jsonl", "fine-tune")
    theirs = create_file(outsider.user, path, "upload.jsonl", "fine-tune")
    run_queued_jobs()

    page = browser(owner).get("/fine-tuning/new/").content.decode()

    assert f'value="{mine.id}"' in page and "upload.jsonl" in page
    assert theirs.id not in page


def test_the_form_creates_a_job_and_opens_its_page(owner: Any, base: str, chat_data: str) -> None:
    response = browser(owner).post("/fine-tuning/new/", form_data(base, chat_data, suffix="demo"))

    job = FineTuningJob.objects.get(owner_user=owner.user)
    assert response.status_code == 302 and response["Location"] == f"/fine-tuning/{job.id}/"
    assert job.suffix == "demo" and job.adapter["r"] == 8
    assert job.requested_hyperparameters == {
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }


def test_a_service_error_is_shown_on_the_field_it_names(
    owner: Any, base: str, chat_data: str
) -> None:
    client = browser(owner)

    epochs = client.post("/fine-tuning/new/", form_data(base, chat_data, n_epochs="99"))
    rank = client.post("/fine-tuning/new/", form_data(base, chat_data, lora_r="0"))
    suffix = client.post("/fine-tuning/new/", form_data(base, chat_data, suffix="Bad Suffix!"))

    for response, field, text in (
        (epochs, "n_epochs", "n_epochs must be"),
        (rank, "lora_r", "adapter.r"),
        (suffix, "suffix", "suffix"),
    ):
        assert response.status_code == 200
        assert text in " ".join(response.context["form"].errors[field])
        assert f'id="ft-field-{field}"' in response.content.decode()
    assert not FineTuningJob.objects.exists()


def test_a_dpo_fine_tune_of_chat_rows_is_refused_on_the_data_field(
    owner: Any, base: str, chat_data: str
) -> None:
    response = browser(owner).post("/fine-tuning/new/", form_data(base, chat_data, method="dpo"))

    assert "preference" in " ".join(response.context["form"].errors["training_file"])


def test_text_that_is_neither_auto_nor_a_number_is_a_form_error(
    owner: Any, base: str, chat_data: str
) -> None:
    response = browser(owner).post(
        "/fine-tuning/new/", form_data(base, chat_data, batch_size="lots")
    )

    assert response.context["form"].errors["batch_size"]
    assert not FineTuningJob.objects.exists()


def test_cancel_is_a_post_that_cancels_an_active_job(owner: Any, job: FineTuningJob) -> None:
    client = browser(owner)

    assert client.get(f"/fine-tuning/{job.id}/cancel/").status_code == 405
    response = client.post(f"/fine-tuning/{job.id}/cancel/")

    assert response.status_code == 302 and response["Location"] == f"/fine-tuning/{job.id}/"
    job.refresh_from_db()
    assert job.status == FineTuneStatus.CANCELLED
    again = client.post(f"/fine-tuning/{job.id}/cancel/", follow=True)
    assert "cannot be cancelled" in again.content.decode()


def test_the_page_shows_a_running_job_with_its_cancel_button(
    owner: Any, job: FineTuningJob
) -> None:
    page = browser(owner).get(f"/fine-tuning/{job.id}/").content.decode()

    assert 'id="ft-cancel"' in page and 'id="ft-loss-chart"' in page
    assert 'id="ft-try"' not in page


def test_the_json_carries_status_progress_points_events_and_checkpoints(
    owner: Any, job: FineTuningJob
) -> None:
    FineTuningJob.objects.filter(pk=job.pk).update(progress=0.5)
    for step, loss, valid in ((1, 2.0, None), (2, 1.5, 1.7)):
        data = {"step": step, "train_loss": loss, "valid_loss": valid}
        FineTuningEvent.objects.create(job=job, type="metrics", message=f"Step {step}", data=data)
    FineTuningCheckpoint.objects.create(
        job=job, step=2, complete=True, metrics={"train_loss": 1.5, "valid_loss": 1.7}
    )
    client = browser(owner)

    first = client.get(f"/fine-tuning/{job.id}/data.json").json()
    later = client.get(f"/fine-tuning/{job.id}/data.json?since={first['last']}").json()

    assert first["status"] == "queued" and first["active"] is True
    assert first["status_label"] == "排队中" and first["progress"] == 0.5
    assert first["points"] == [[1, 2.0, None], [2, 1.5, 1.7]]
    assert later["points"] == [] and later["last"] == first["last"]
    for odd in ("²", "9" * 30, "-1", "x"):
        response = client.get(f"/fine-tuning/{job.id}/data.json", {"since": odd})
        assert response.status_code == 200 and len(response.json()["points"]) == 2
    assert first["events"][0]["message"] == "Step 2"
    ids = [e["id"] for e in first["events"]]
    assert ids == sorted(ids, reverse=True)
    assert first["checkpoints"][0]["step"] == 2 and first["checkpoints"][0]["valid_loss"] == 1.7
    assert first["fine_tuned_model"] is None


def test_a_succeeded_job_links_to_the_playground_with_its_model(
    owner: Any, job: FineTuningJob
) -> None:
    name = f"ft:{BASE}:olivia:first:{job.id}"
    FineTuningJob.objects.filter(pk=job.pk).update(
        status=FineTuneStatus.SUCCEEDED, fine_tuned_model=name, progress=1.0
    )

    page = browser(owner).get(f"/fine-tuning/{job.id}/").content.decode()

    assert f'href="/playground/?model={name.replace(":", "%3A")}"' in page
    assert 'id="ft-cancel"' not in page


def test_pages_speak_english_when_asked(owner: Any, job: FineTuningJob) -> None:
    client = browser(owner)
    client.cookies["django_language"] = "en"

    page = client.get(f"/fine-tuning/{job.id}/").content.decode()

    assert "Cancel job" in page and "Loss" in page
