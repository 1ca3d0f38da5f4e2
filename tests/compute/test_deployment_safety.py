"""What a deployment may ask of a node (engine arguments, checked at deploy time), and
who sees its internals (log tails, replica URLs)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.utils import timezone

from compute.models import Node, Replica, ReplicaStatus
from portal.models import ModelFile
from tests.factories import model_repo

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def repo(owner):
    repo = model_repo(owner.user, "safe", visibility="public")
    version = repo.versions.get()
    version.config = {"max_position_embeddings": 4096}
    version.save()
    ModelFile.objects.create(
        version=version, path="adapters/sql/adapter_config.json", size=2, sha256="0" * 64,
        object_key="k",
    )  # fmt: skip
    Node.objects.create(
        name="gpu", token_hash="g" * 64, status="ready", last_heartbeat_at=timezone.now(),
        gpus=[{"index": 0}, {"index": 1}], engines=["transformers", "vllm"], max_replicas=16,
    )  # fmt: skip
    return repo


def deploy(actor: Any, engine: str = "auto", **args: Any):
    return actor.client().post(
        "/api/compute/deployments/",
        {"model": "olivia/safe", "engine": engine, "engine_args": args},
        format="json",
    )


def test_trust_remote_code_needs_a_version_an_admin_marked_trusted(repo, owner):
    refused = deploy(owner, "vllm", trust_remote_code=True)
    assert refused.status_code == 400
    assert refused.json()["param"] == "engine_args" and "trusted" in refused.json()["detail"]
    repo.versions.update(trusted=True)
    assert deploy(owner, "vllm", trust_remote_code=True).status_code == 201


@pytest.mark.parametrize(
    ("engine", "args", "message"),
    [
        ("vllm", {"enable_lora": True, "lora_modules": {"x": "/etc/ssh"}}, "relative path"),
        ("vllm", {"enable_lora": True, "lora_modules": {"x": "../../m"}}, "relative path"),
        ("vllm", {"enable_lora": True, "lora_modules": {"x": "adapters/nope"}}, "no directory"),
        ("vllm", {"gpu_ids": [0, 1]}, "set by the platform"),
        ("vllm", {"enable_log_requests": True}, "set by the platform"),
        ("vllm", {"generation_config": "/root"}, "generation_config"),
        ("vllm", {"seed": 2**64}, "seed"),
        ("vllm", {"max_model_len": 100000}, "4096 positions"),
        ("vllm", {"gpu_memory_utilization": 7}, "gpu_memory_utilization"),
        ("vllm", {"max_num_seq": 4}, "no option 'max_num_seq'"),
        ("transformers", {"max_batch_size": 0}, "max_batch_size"),
        ("transformers", {"device": "tpu"}, "device"),
        ("auto", {"gpu_memory_utilization": 0.9}, "engine=auto runs either engine"),
        ("auto", {"device": "cpu"}, "engine=auto runs either engine"),
        ("auto", {"max_loras": 4}, "need enable_lora=True"),  # vLLM reserves memory for them
        ("transformers", {"max_lora_rank": 48}, "max_lora_rank"),
    ],
)
def test_bad_or_unsafe_engine_args_are_400_at_deploy_time(repo, owner, engine, args, message):
    response = deploy(owner, engine, **args)
    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]
    assert not Replica.objects.exists()


def test_good_engine_args_deploy(repo, owner):
    lora = {"enable_lora": True, "lora_modules": {"sql": "adapters/sql"}}
    assert deploy(owner, "vllm", gpu_memory_utilization=0.9, **lora).status_code == 201
    assert deploy(owner, "auto", max_model_len=2048, dtype="bfloat16").status_code == 201
    multi_lora = {"enable_lora": True, "max_loras": 6, "max_lora_rank": 32}
    assert deploy(owner, "auto", **multi_lora).status_code == 201
    response = deploy(owner, "vllm", tensor_parallel_size=2)
    assert response.status_code == 201 and response.json()["gpus_per_replica"] == 2


def test_outsider_sees_status_but_no_log_tail_url_or_args(repo, owner, outsider, admin):
    created = deploy(owner, "transformers", max_batch_size=4).json()
    replica = Replica.objects.get(deployment_id=created["id"])
    replica.transition(
        ReplicaStatus.READY, url="http://10.0.0.7:20001", last_error="Traceback: secret path"
    )
    url = f"/api/compute/deployments/{created['id']}/"
    seen = outsider.client().get(url).json()
    (public,) = seen["replica_set"]
    assert public["status"] == "ready"
    assert (public["url"], public["last_error"], public["node"]) == ("", "", None)
    assert seen["engine_args"] == {}
    listed = outsider.client().get("/api/compute/deployments/").json()["results"]
    assert [r["last_error"] for d in listed for r in d["replica_set"]] == [""]
    for insider in (owner, admin):
        (full,) = insider.client().get(url).json()["replica_set"]
        assert full["last_error"].startswith("Traceback") and full["url"].endswith(":20001")
        assert insider.client().get(url).json()["engine_args"] == {"max_batch_size": 4}


def test_transformers_engine_refuses_to_start_without_an_api_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENMAAS_ENGINE_API_KEY"}
    for value in (None, "  "):
        if value is not None:
            env["OPENMAAS_ENGINE_API_KEY"] = value
        done = subprocess.run(
            [sys.executable, "-m", "compute.engines.transformers_server",
             "--model", str(tmp_path), "--served-model-name", "x"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2
        assert "OPENMAAS_ENGINE_API_KEY" in done.stderr and "never serves" in done.stderr


def test_engine_argument_schemas_are_published(owner):
    response = owner.client().get("/api/compute/engines/")
    assert response.status_code == 200
    engines = {e["name"]: e["arguments"] for e in response.json()["engines"]}
    assert engines["vllm"]["trust_remote_code"]["access"] == "trusted"
    assert engines["transformers"]["device"]["choices"] == ["cpu", "cuda"]
