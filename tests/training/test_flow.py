"""A fine-tune's life on the control plane: the runner API driven with httpx exactly as
the contract says (token auth, events, checkpoints and the result uploaded by presigned
PUT to the real S3 server), the workload status mapping, and the success path that
registers the fine-tuned model in the hub."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import openai
import pytest

from compute.services import workloads
from datasets.models import File
from datasets.services.files import content_of
from portal.models import ModelRepo
from tests.training.conftest import start_run, workload_of
from training.models import FineTuningJob
from training.services import jobs
from training.services.runs import TrainingKind

ADAPTER_CONFIG = json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}).encode()


def new_job(owner: Any, **extra: Any) -> FineTuningJob:
    return jobs.create_job(owner.user, model="olivia/tiny", training_file="olivia/chat", **extra)


class Runner:
    """The runner's side of the contract, over real HTTP."""

    def __init__(self, portal: str, token: str) -> None:
        self.base = f"{portal}/api/training/runner/"
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(self.base + path, json=body or {}, headers=self.headers, timeout=30)

    def upload(self, path: str, body: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        """Announce ``files``, PUT each to its presigned URL; the announcement's answer."""
        listed = [
            {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        ]
        answer = self.post(path, {**body, "files": listed})
        assert answer.status_code == 200, answer.text
        uploads = answer.json()["uploads"]
        assert sorted(u["path"] for u in uploads) == sorted(files)
        for upload in uploads:
            put = httpx.put(upload["url"], content=files[upload["path"]], timeout=30)
            assert put.status_code == 200, put.text
        return answer.json()


def metrics(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "total_steps": 6,
        "train_loss": 2.0 / step,
        "train_mean_token_accuracy": 0.1 * step,
        "valid_loss": None,
        "valid_mean_token_accuracy": None,
        "learning_rate": 2e-4,
        "tokens_per_second": 900.0,
        "gpu_memory_bytes": 0,
        "trained_tokens": 40 * step,
    }


ADAPTER = {
    "adapter_config.json": ADAPTER_CONFIG,
    "adapter_model.safetensors": b"weights-" * 100,
}


def test_runner_reports_checkpoints_and_a_result_that_becomes_a_private_hub_model(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    job = new_job(owner, suffix="support")
    _, token = start_run(job.id)
    runner = Runner(live_portal, token)
    job.refresh_from_db()
    assert job.status == "running" and job.attempts == 1

    events = [{"type": "metrics", "data": metrics(s)} for s in (1, 2)]
    events.append({"type": "message", "level": "info", "message": "warming up"})
    answer = runner.post("events", {"progress": 2 / 6, "events": events})
    assert answer.json() == {"cancel": False}

    checkpoint_files = {**ADAPTER, "trainer_state.pt": b"state" * 10}
    runner.upload("checkpoints", {"step": 2, "metrics": metrics(2)}, checkpoint_files)
    done = runner.post("checkpoints/2/complete")
    assert done.status_code == 200 and done.json()["id"].startswith("ftckpt-")

    olivia = openai.OpenAI(api_key=owner.key, base_url=f"{live_portal}/v1", max_retries=0)
    (checkpoint,) = olivia.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoint.step_number == 2 and checkpoint.metrics.train_loss == 1.0
    assert checkpoint.fine_tuned_model_checkpoint.endswith(f":{job.id}:ckpt-step-2")
    shown = olivia.fine_tuning.jobs.list_events(job.id, limit=100).data
    step_events = [e for e in shown if e.type == "metrics"]
    assert step_events[0].message == "Step 2/6: training loss=1.0000"
    assert step_events[0].data["trained_tokens"] == 80

    history = [[s, 2.0 / s, 0.1 * s, None, None] for s in range(1, 7)]
    result_metrics = {"trained_tokens": 240, "train_loss": 0.33, "valid_loss": None}
    peft_card = {"README.md": b"---\nlibrary_name: peft\n---\n"}  # peft writes one
    runner.upload(
        "result", {"metrics": result_metrics, "history": history}, {**ADAPTER, **peft_card}
    )
    finished = runner.post("result/complete")

    assert finished.status_code == 200, finished.text
    name = f"ft:olivia/tiny:olivia:support:{job.id}"
    assert finished.json() == {"fine_tuned_model": name}
    assert runner.post("result/complete").json() == {"fine_tuned_model": name}  # idempotent
    final = olivia.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "succeeded" and final.fine_tuned_model == name
    assert final.trained_tokens == 240 and len(final.result_files) == 1
    repo = ModelRepo.objects.get(namespace="olivia", name="tiny-ft-support")
    assert repo.visibility == "private" and repo.owner_user == owner.user
    version = repo.versions.get()
    assert version.base_version == base_model
    assert sorted(version.files.values_list("path", flat=True)) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert repo.card_data["base_model"] == "olivia/tiny"
    assert repo.card_data["datasets"] == ["olivia/chat@v1"]
    assert {"fine-tuned", "lora"} <= set(repo.tags)
    assert "| 6 | 0.3333 | 0.6000 |  |  |" in repo.card
    csv_file = File.objects.get(pk=final.result_files[0])
    assert csv_file.purpose == "fine-tune-results" and csv_file.owner_user == owner.user
    csv_text = b"".join(content_of(csv_file)).decode()
    assert (
        csv_text.splitlines()[0]
        == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    )
    assert csv_text.splitlines()[1] == "1,2.0,0.1,,"
    messages = [e.message for e in shown] + [
        e.message for e in olivia.fine_tuning.jobs.list_events(job.id, limit=5).data
    ]
    assert any("is not served" in m for m in messages)


def test_a_requeued_run_resumes_from_the_latest_checkpoint_and_the_old_token_is_401(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    job = new_job(owner)
    workload, old_token = start_run(job.id)
    old = Runner(live_portal, old_token)
    old.upload("checkpoints", {"step": 3, "metrics": metrics(3)}, ADAPTER)
    assert old.post("checkpoints/3/complete").status_code == 200

    assert workloads.requeue(workload, "node gpu-box-1 went silent")

    job.refresh_from_db()
    assert job.status == "queued"
    assert job.events.filter(
        message__contains="will resume from checkpoint step 3", message__startswith="Runner lost"
    ).exists()
    assert old.post("events", {"events": []}).status_code == 401
    workload, new_token = start_run(job.id)
    job.refresh_from_db()
    assert job.status == "running" and job.attempts == 2
    described = TrainingKind().describe(workload)
    assert described["spec"]["resume"] == {"step": 3, "dir": "resume"}
    assert described["spec"]["attempt"] == 2
    resumed = {f["path"]: f for f in described["files"]}
    assert set(resumed) == {
        "data/train.jsonl",
        "resume/adapter_config.json",
        "resume/adapter_model.safetensors",
    }
    assert httpx.get(resumed["resume/adapter_config.json"]["url"]).content == ADAPTER_CONFIG
    assert Runner(live_portal, new_token).post("events", {"events": []}).json() == {"cancel": False}


def test_describe_gives_the_runner_spec_of_the_contract(
    owner: Any, base_model: Any, chat_dataset: Any, settings: Any
) -> None:
    settings.FINE_TUNING_CHECKPOINT_EVERY = 0
    job = new_job(owner, seed=5, hyperparameters={"n_epochs": 4, "learning_rate_multiplier": 0.5})

    described = TrainingKind().describe(workload_of(job.id))

    spec = described["spec"]
    assert spec["job"] == job.id and spec["method"] == "supervised" and spec["task"] == "fine_tune"
    assert spec["train_file"] == "data/train.jsonl" and spec["validation_file"] is None
    assert spec["hyperparameters"]["learning_rate"] == pytest.approx(1e-4)
    assert spec["hyperparameters"]["n_epochs"] == 4 and spec["hyperparameters"]["batch_size"] == 1
    assert spec["hyperparameters"]["checkpoint_every"] == 3  # 3 rows × 4 epochs / 4
    assert spec["adapter"]["type"] == "lora" and spec["adapter"]["r"] == 8
    assert (spec["device"], spec["dtype"], spec["seed"], spec["resume"]) == (
        "cpu",
        "float32",
        5,
        None,
    )
    (train,) = described["files"]
    assert train["path"] == "data/train.jsonl" and len(train["sha256"]) == 64
    assert httpx.get(train["url"]).content.startswith(b'{"messages"')


def test_bad_runner_reports_are_refused(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any, settings: Any
) -> None:
    settings.FINE_TUNING_MAX_FILE_BYTES = 1000
    job = new_job(owner)
    _, token = start_run(job.id)
    runner = Runner(live_portal, token)
    good = {"path": "adapter_config.json", "size": 10, "sha256": "0" * 64}

    for files in (
        [{**good, "path": "../escape.json"}],
        [{**good, "path": "/etc/passwd"}],
        [{**good, "path": "run.sh"}],
        [{**good, "size": 1001}],
        [{**good, "sha256": "xyz"}],
        [{**good, "path": f"f{n}.json"} for n in range(21)],
        [good, good],
    ):
        assert runner.post("checkpoints", {"step": 1, "files": files}).status_code == 400
    bad_events = [
        {"type": "metrics", "data": {"train_loss": "low"}},
        {"type": "metrics", "data": {"Bad Name": 1}},
        {"type": "message", "level": "shout", "message": "hi"},
        {"type": "gossip"},
    ]
    for event in bad_events:
        assert runner.post("events", {"events": [event]}).status_code == 400
    for literal in (b"1e400", b"NaN", b"Infinity"):
        body = b'{"events": [{"type": "metrics", "data": {"train_loss": ' + literal + b"}}]}"
        headers = {**runner.headers, "Content-Type": "application/json"}
        response = httpx.post(runner.base + "events", content=body, headers=headers)
        assert response.status_code == 400, literal
    assert runner.post("checkpoints/9/complete").status_code == 404
    announced = runner.post("checkpoints", {"step": 1, "files": [good]})
    assert announced.status_code == 200
    missing = runner.post("checkpoints/1/complete")
    assert missing.status_code == 400 and "not uploaded" in missing.json()["detail"]
    for header in (
        {},
        {"Authorization": "Bearer mrun-1.1.forged"},
        {"Authorization": f"Bearer {owner.key}"},
    ):
        response = httpx.post(runner.base + "events", json={"events": []}, headers=header)
        assert response.status_code == 401
    assert not job.events.filter(type="metrics").exists()


def test_cancelling_a_running_job_tells_the_runner_and_stops_the_workload(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    job = new_job(owner)
    workload, token = start_run(job.id)

    jobs.cancel_job(owner.user, job.id)

    workload.refresh_from_db()
    assert workload.status == "stopping"
    job.refresh_from_db()
    assert job.status == "cancelled" and job.cancel_requested
    assert Runner(live_portal, token).post("events", {"events": []}).status_code == 401
    workloads.transition(workload, "stopped")
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_workload_failures_map_to_job_states(
    owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    retried = new_job(owner)
    workload, _ = start_run(retried.id)
    workloads.transition(workload, "failed", "exit code 1", last_error="Traceback …")
    retried.refresh_from_db()
    assert retried.status == "running"  # attempts are left: compute requeues it
    workloads.requeue(workload, "exit code 1")
    retried.refresh_from_db()
    assert retried.status == "queued"

    final = new_job(owner)
    workload, _ = start_run(final.id)
    workload.max_attempts = 1
    workload.save(update_fields=["max_attempts"])
    workloads.transition(workload, "failed", "exit code 137")
    final.refresh_from_db()
    assert final.status == "failed" and final.error_code == "runner_failed"
    assert "exit code 137" in final.error

    quiet = new_job(owner)
    workload, _ = start_run(quiet.id)
    workloads.transition(workload, "succeeded")
    quiet.refresh_from_db()
    assert quiet.status == "failed" and quiet.error_code == "no_result"
    assert not quiet.training_version.uses.filter(ref=quiet.id, active=True).exists()


def test_full_weights_get_the_base_tokenizer_and_no_base_version(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    job = new_job(owner, adapter={"type": "full"})
    _, token = start_run(job.id)
    runner = Runner(live_portal, token)
    config = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode()
    files = {"model.safetensors": b"w" * 64, "config.json": config}
    runner.upload("result", {"metrics": {"trained_tokens": 9}, "history": []}, files)

    assert runner.post("result/complete").status_code == 200

    job.refresh_from_db()
    version = job.result_version
    assert version is not None and version.base_version is None
    paths = set(version.files.values_list("path", flat=True))
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= paths
    assert version.config["model_type"] == "llama" and "full" in version.repo.tags
    assert job.events.filter(message__contains="deploy that model to serve it").exists()


def test_an_adapter_of_a_deployed_base_is_served(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any
) -> None:
    from compute.models import Deployment, ServedAdapter

    Deployment.objects.create(model_version=base_model, served_name="olivia/tiny")
    job = new_job(owner)
    _, token = start_run(job.id)
    runner = Runner(live_portal, token)
    runner.upload("result", {"metrics": {"trained_tokens": 9}, "history": []}, ADAPTER)

    name = runner.post("result/complete").json()["fine_tuned_model"]

    served = ServedAdapter.objects.get(served_name=name)
    job.refresh_from_db()
    assert served.model_version == job.result_version
    assert job.events.filter(message__contains="is served by the deployment").exists()


def test_only_the_newest_checkpoints_are_kept(
    live_portal: str, owner: Any, base_model: Any, chat_dataset: Any, settings: Any
) -> None:
    from portal.storage import store

    settings.FINE_TUNING_KEEP_CHECKPOINTS = 2
    job = new_job(owner)
    _, token = start_run(job.id)
    runner = Runner(live_portal, token)
    for step in (1, 2, 3):
        runner.upload("checkpoints", {"step": step, "metrics": metrics(step)}, ADAPTER)
        assert runner.post(f"checkpoints/{step}/complete").status_code == 200

    assert sorted(job.checkpoints.values_list("step", flat=True)) == [2, 3]
    gone = f"training/{job.id}/checkpoints/1/adapter_config.json"
    kept = f"training/{job.id}/checkpoints/2/adapter_config.json"
    assert not store().exists("artifacts", gone) and store().exists("artifacts", kept)
