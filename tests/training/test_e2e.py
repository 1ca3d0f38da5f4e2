"""Fine-tuning end to end, on real parts: the official openai SDK uploads a chat dataset
and fine-tunes ``openmaas/demo-tiny`` with LoRA; a real node agent runs the real runner;
the job is followed through its events to ``succeeded``; the fine-tuned model answers
through the gateway from the base model's own replica. The runner and then the agent are
killed mid-job, and the job still ends with the loss of an uninterrupted run.

The tests share one portal, node agent and base replica (``module_db``), in file order."""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from compute.agent.procs import spawn, stop, wait_for
from compute.models import Deployment, ReplicaStatus, Workload, WorkloadStatus
from compute.services.deployments import deploy_model
from compute.services.nodes import create_node
from compute.services.scheduler import reconcile_pool
from portal.services.registry import import_model_dir
from tests.datasets.conftest import run_queued_jobs
from training.models import FineTuningCheckpoint, FineTuningJob

pytestmark = pytest.mark.e2e
BASE = "openmaas/demo-tiny"
DEMO_STEPS = 60
# The fine-tune teaches one fixed answer the demo model has never seen.
ANSWER = "openmaas 让每个开发者都能在自己的算力上精调模型。"
QUESTIONS = [f"第{i}个问题：平台能做什么？" for i in range(64)]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from portal.demo.builder import build_demo_model

    out = tmp_path_factory.mktemp("demo-tiny")
    return build_demo_model(out, steps=DEMO_STEPS, say=lambda msg: None)


def chat_rows(questions: list[str]) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
        for q in questions
    ]
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def beat() -> None:
    """What Celery beat does every few seconds: place work, advance validated jobs."""
    from training.tasks import advance_waiting_jobs

    reconcile_pool()
    advance_waiting_jobs()


def until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    def step() -> Any:
        beat()
        return check()

    return wait_for(step, timeout_s=timeout_s, what=what, interval_s=0.2, ignore=())


class Pool:
    """A live portal, ``openmaas/demo-tiny`` deployed on one replica, and a node agent."""

    def __init__(self, url: str, token: str, work: Path) -> None:
        self.url, self.token, self.work = url, token, work
        self.agent = self.start_agent()

    def start_agent(self) -> Any:
        env = {**os.environ, "OPENMAAS_NODE_TOKEN": self.token}
        argv = [sys.executable, "-m", "compute.agent", "--portal", self.url]
        return spawn([*argv, "--work-dir", str(self.work)], log=self.work / "agent.log", env=env)

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def pool(
    module_live_portal: str,
    demo_dir: Path,
    module_admin: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pool]:
    version = import_model_dir(demo_dir, BASE, actor=None, visibility="public")
    deployment = deploy_model(module_admin.user, version.repo, replicas=1)
    _, token = create_node(module_admin.user, "trainer-node")
    work = tmp_path_factory.mktemp("pool") / "agent"
    work.mkdir()
    pool = Pool(module_live_portal, token, work)
    try:
        until(
            lambda: deployment.replica_set.filter(status=ReplicaStatus.READY).exists(),
            180,
            "the base replica",
        )
        yield pool
    finally:
        stop(pool.agent, grace_s=20)


def upload(client: openai.OpenAI, data: bytes, name: str) -> str:
    file = client.files.create(file=(name, data), purpose="fine-tune")
    run_queued_jobs()  # ingest, as a Celery worker would
    return file.id


def create_job(client: openai.OpenAI, train: str, valid: str | None, **extra: Any) -> Any:
    hyper = {"n_epochs": extra.pop("n_epochs", 3), "batch_size": 4, "learning_rate_multiplier": 10}
    return client.fine_tuning.jobs.create(
        model=BASE,
        training_file=train,
        validation_file=valid,
        suffix="e2e",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
        extra_body={"adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0}, **extra},
    )


def finished(client: openai.OpenAI, job_id: str, timeout_s: float = 600) -> Any:
    return until(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job_id)).status
            in ("succeeded", "failed", "cancelled")
            and j
        ),
        timeout_s,
        f"job {job_id} to finish",
    )


def routed(client: openai.OpenAI, model: str) -> bool:
    try:
        client.completions.create(model=model, prompt="你好", max_tokens=1)
    except (openai.NotFoundError, openai.InternalServerError):  # until the routes have it
        return False
    return True


def answer_loss(client: openai.OpenAI, model: str, questions: list[str]) -> float:
    """Mean negative log-likelihood per token of ``ANSWER`` after each question, read
    through the gateway from the served model's ``echo`` logprobs."""
    total, count = 0.0, 0
    for question in questions:
        prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        full = client.completions.create(
            model=model, prompt=prompt + ANSWER, max_tokens=0, echo=True, logprobs=0
        )
        head = client.completions.create(
            model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=0
        )
        answer = full.choices[0].logprobs.token_logprobs[len(head.choices[0].logprobs.tokens) :]
        total -= sum(answer)
        count += len(answer)
    return total / count


def test_sdk_lora_fine_tune_is_served_beside_its_base(pool: Pool, module_owner: Any) -> None:
    client = pool.sdk(module_owner.key)
    train = upload(client, chat_rows(QUESTIONS[:48]), "train.jsonl")
    valid = upload(client, chat_rows(QUESTIONS[48:56]), "valid.jsonl")
    held_out = QUESTIONS[56:]
    before = answer_loss(client, BASE, held_out)

    job = finished(client, create_job(client, train, valid).id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{BASE}:{module_owner.user.username}:e2e:{job.id}"
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.result_files

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    messages = [e.message for e in reversed(events)]  # oldest first
    lifecycle = ["Created", "Validated", "queued", "Placed on node", "started", "successfully"]
    found = [next(i for i, m in enumerate(messages) if step in m) for step in lifecycle]
    assert found == sorted(found), messages
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all(math.isfinite(m["train_loss"]) for m in metrics)

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and checkpoints[0].metrics.train_loss is not None
    assert checkpoints[0].metrics.valid_loss is not None

    # Served once the base replica's agent has loaded the adapter (a heartbeat or two) and
    # the gateway's route table has seen it (at most a second later).
    deployment = Deployment.objects.get(served_name=BASE)
    until(
        lambda: deployment.replica_set.filter(adapters__contains=[job.fine_tuned_model]).exists(),
        60,
        "the adapter loaded on the base replica",
    )
    until(lambda: routed(client, job.fine_tuned_model), 10, "the adapter's route")
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": held_out[0]}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.choices[0].message.content
    base_reply = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "你好"}], max_tokens=4
    )
    assert base_reply.choices[0].message.role == "assistant"
    # One base replica serves both: the adapter is loaded on it, not on a replica of its own.
    replicas = list(deployment.replica_set.filter(status=ReplicaStatus.READY))
    assert len(replicas) == 1 and job.fine_tuned_model in replicas[0].adapters

    after = answer_loss(client, job.fine_tuned_model, held_out)
    # A whole nat per answer token less on questions it never saw (seeded: the same every run).
    assert after < before - 1.0, (before, after)


def workload_of(job_id: str) -> Workload:
    return Workload.objects.get(kind="training", ref=job_id)


def checkpoint_of(job_id: str, attempt: int) -> FineTuningCheckpoint | None:
    return FineTuningCheckpoint.objects.filter(
        job_id=job_id, attempt=attempt, complete=True
    ).first()


def final_loss(job_id: str) -> float:
    job = FineTuningJob.objects.get(pk=job_id)
    last = job.events.filter(type="metrics").order_by("-pk").first()
    assert last is not None
    return float(last.data["train_loss"])


def test_killed_runner_and_agent_resume_to_the_uninterrupted_loss(
    pool: Pool, module_owner: Any
) -> None:
    client = pool.sdk(module_owner.key)
    train = upload(client, chat_rows(QUESTIONS[:48]), "train.jsonl")
    reference = finished(client, create_job(client, train, None, n_epochs=4).id)
    assert reference.status == "succeeded", reference.error

    job = create_job(client, train, None, n_epochs=4)
    until(lambda: checkpoint_of(job.id, 1), 300, "a first checkpoint")
    os.kill(workload_of(job.id).pid, signal.SIGKILL)  # the runner

    until(lambda: checkpoint_of(job.id, 2), 300, "a checkpoint after the resume")
    pool.agent.send_signal(signal.SIGKILL)  # the agent: its runner dies with it
    pool.agent.wait(30)
    pool.agent = pool.start_agent()

    done = finished(client, job.id)
    assert done.status == "succeeded", done.error
    assert workload_of(job.id).attempt == 3
    resumed = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert sum("resum" in m for m in resumed) >= 2
    assert final_loss(job.id) == pytest.approx(final_loss(reference.id), rel=1e-5, abs=1e-6)


def test_cancel_stops_the_runner_within_seconds_and_frees_the_node(
    pool: Pool, module_owner: Any
) -> None:
    client = pool.sdk(module_owner.key)
    train = upload(client, chat_rows(QUESTIONS[:48]), "train.jsonl")
    job = create_job(client, train, None, n_epochs=50)
    until(lambda: workload_of(job.id).status == WorkloadStatus.RUNNING, 300, "the runner")
    pid = workload_of(job.id).pid

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status in ("cancelled", "running")
    until(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "cancelled", 15, "cancelled")
    until(lambda: workload_of(job.id).status == WorkloadStatus.STOPPED, 15, "the runner to stop")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not Workload.objects.filter(status__in=WorkloadStatus.ON_NODE).exists()
