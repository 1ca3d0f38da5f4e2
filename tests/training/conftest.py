"""Fine-tuning test helpers: a real tiny base model in the hub, ready chat and preference
datasets, and the compute-side moves (place, run, requeue) a node would cause."""

from __future__ import annotations

import json
from typing import Any

import pytest

from datasets.models import DatasetRepo
from datasets.services.repos import create_repo
from portal.models import ModelVersion
from portal.services.registry import import_model_dir
from tests.datasets.conftest import CHAT_JSONL, add_version

PREFERENCE_ROW = {
    "input": {"messages": [{"role": "user", "content": "Say hi"}]},
    "preferred_output": [{"role": "assistant", "content": "Hi there!"}],
    "non_preferred_output": [{"role": "assistant", "content": "No."}],
}
PREFERENCE_JSONL = "".join(json.dumps(PREFERENCE_ROW) + "\n" for _ in range(3))


@pytest.fixture
def base_model(owner: Any, tiny_model_dir: Any) -> ModelVersion:
    """``olivia/tiny``: a real model directory imported into the hub (private)."""
    return import_model_dir(tiny_model_dir, "olivia/tiny", actor=owner.user, visibility="private")


@pytest.fixture
def chat_dataset(owner: Any) -> DatasetRepo:
    """``olivia/chat`` with one ingested (ready) version of three chat rows."""
    repo = create_repo(owner.user, owner.user, "chat")
    add_version(repo, owner.user, {"train.jsonl": CHAT_JSONL})
    return repo


@pytest.fixture
def preference_dataset(owner: Any) -> DatasetRepo:
    repo = create_repo(owner.user, owner.user, "prefs")
    add_version(repo, owner.user, {"train.jsonl": PREFERENCE_JSONL})
    return repo


def workload_of(job_id: str) -> Any:
    from compute.services import workloads

    return workloads.for_ref("training", job_id)


def start_run(job_id: str) -> tuple[Any, str]:
    """What placement and the agent's first reports do: assigned, then running; returns
    the workload and its runner token."""
    from compute.models import Node
    from compute.services import workloads

    workload = workload_of(job_id)
    node, _ = Node.objects.get_or_create(
        name="gpu-box-1", defaults={"token_hash": "h" * 64, "token_prefix": "x"}
    )
    assert workloads.transition(workload, "assigned", node=node)
    assert workloads.transition(workload, "running")
    return workload, workloads.token_for(workload)
