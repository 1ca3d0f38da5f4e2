"""Served LoRA adapters: the base deployment's replicas are told to load them, and the
gateway routes an adapter's name only to the replicas whose engine reports it loaded,
shown in /v1/models only to those who may read the adapter's model."""

from __future__ import annotations

import httpx
import pytest

from compute.models import Deployment, Node, Replica, ReplicaStatus, ServedAdapter
from compute.routing import _query_routes
from compute.services.deployments import (
    deploy_model,
    serve_adapter,
    stop_deployment,
    unserve_adapter,
)
from portal.errors import PlatformError
from portal.models import ModelFile, ModelVersion
from tests.compute.test_gpus_and_draining import FakeNode
from tests.factories import model_repo
from tests.portal.fake_engine import serve_fake_engine

FT_NAME = "ft:olivia/base:olivia:support:ftjob-abc"


@pytest.fixture(autouse=True)
def node_networks(settings):
    settings.COMPUTE_NODE_NETWORKS = ["10.0.0.0/8"]


@pytest.fixture
def base(owner):
    return model_repo(owner.user, "base")


def adapter_of(owner, base, visibility: str = "private") -> ModelVersion:
    """A private fine-tune of ``base``: a repo whose version is a LoRA adapter on it."""
    repo = model_repo(owner.user, "base-ft-support", visibility=visibility)
    version = repo.versions.get()
    version.base_version = base.versions.get()
    version.revision = "b" * 64
    version.save()
    ModelFile.objects.create(
        version=version,
        path="adapter_model.safetensors",
        size=3,
        sha256="c" * 64,
        object_key="adapters/x",
    )
    return version


def test_a_replica_reporting_the_adapter_gets_its_route(admin, owner, base):
    node = FakeNode(admin, "box", "10.0.0.81")
    dep = deploy_model(owner.user, base, replicas=2, engine="transformers")
    adapter = adapter_of(owner, base)
    assert serve_adapter(adapter, FT_NAME) is not None

    wanted = node.run_all()
    for desired in wanted:
        (entry,) = desired["adapters"]
        assert (entry["name"], entry["revision"]) == (FT_NAME, "b" * 64)
        assert entry["files"][0]["path"] == "adapter_model.safetensors"
        assert entry["files"][0]["url"].startswith("http")
    route = _query_routes()[FT_NAME]
    assert route.replicas == []  # no engine has loaded it yet
    assert route.model_version_id == adapter.pk

    loaded_on = wanted[0]["id"]
    node.reports[loaded_on]["adapters"] = [FT_NAME]
    node.desired()
    assert Replica.objects.get(pk=loaded_on).adapters == [FT_NAME]
    route = _query_routes()[FT_NAME]
    assert route.replicas == [Replica.objects.get(pk=loaded_on).url]
    assert (route.owner_user_id, route.visibility) == (owner.user.pk, "private")
    assert _query_routes()[dep.served_name].model_version_id == base.versions.get().pk
    assert len(_query_routes()[dep.served_name].replicas) == 2

    assert unserve_adapter(FT_NAME)
    assert FT_NAME not in _query_routes()
    assert all(d["adapters"] == [] for d in node.desired())


def test_an_adapter_is_served_only_where_its_base_version_is_deployed(owner, base):
    adapter = adapter_of(owner, base)
    assert serve_adapter(adapter, FT_NAME) is None
    with pytest.raises(PlatformError):
        serve_adapter(base.versions.get(), "ft:not-an-adapter")


def test_serving_again_is_idempotent_and_survives_a_redeploy_of_the_base(owner, base):
    adapter = adapter_of(owner, base)
    first = deploy_model(owner.user, base, replicas=0)
    served = serve_adapter(adapter, FT_NAME)
    assert serve_adapter(adapter, FT_NAME) == served
    second = deploy_model(owner.user, base, replicas=0)
    assert ServedAdapter.objects.get(served_name=FT_NAME).deployment == second != first
    assert FT_NAME in _query_routes()

    stop_deployment(owner.user, second)
    assert FT_NAME not in _query_routes()
    third = deploy_model(owner.user, base, replicas=0)  # deployed again after a stop
    assert ServedAdapter.objects.get(served_name=FT_NAME).deployment == third
    assert FT_NAME in _query_routes()


def test_a_deployments_name_cannot_be_taken_by_an_adapter(owner, base):
    adapter = adapter_of(owner, base)
    dep = deploy_model(owner.user, base, replicas=0)
    with pytest.raises(PlatformError):
        serve_adapter(adapter, dep.served_name)


@pytest.fixture
def fake_engine():
    yield from serve_fake_engine()


def test_gateway_lists_and_routes_an_adapter_only_for_its_readers(
    live_portal, owner, outsider, base, fake_engine
):
    url, engine = fake_engine
    dep = Deployment.objects.create(model_version=base.versions.get(), served_name="olivia/base")
    serve_adapter(adapter_of(owner, base), FT_NAME)
    node = Node.objects.create(name="local", token_hash="f" * 64, status="ready")
    Replica.objects.create(
        deployment=dep, node=node, status=ReplicaStatus.READY, url=url, adapters=[FT_NAME]
    )

    def models(key: str) -> list[str]:
        response = httpx.get(f"{live_portal}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        return [m["id"] for m in response.json()["data"]]

    assert FT_NAME in models(owner.key)
    assert FT_NAME not in models(outsider.key) and "olivia/base" in models(outsider.key)

    body = {"model": FT_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for key, status in [(outsider.key, 404), (owner.key, 200)]:
        response = httpx.post(
            f"{live_portal}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == status, response.text
    assert engine.bodies == [body]  # only the owner's request, its model name unchanged
