"""The /v1 gateway's answers to bad requests, over real HTTP: OpenAI's error shape with
the right status, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from compute.models import Deployment, Node, Replica, ReplicaStatus
from portal.models import Organization
from tests.factories import deployment


def make_served_model(owner, name: str, visibility: str = "public") -> Any:
    """A registered model with an active deployment but no ready replica."""
    return deployment(owner, name, visibility)


def post_chat(url: str, key: str | None, body: object = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))
    if body is not None:
        kwargs["json"] = body
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=10, **kwargs)


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


CHAT = {"model": "olivia/pub", "messages": [{"role": "user", "content": "你好"}]}


@pytest.fixture
def served(owner):
    return make_served_model(owner.user, "pub")


def test_missing_key_is_401(live_portal, served):
    assert_openai_error(post_chat(live_portal, None, CHAT), 401, "missing_api_key")
    assert_openai_error(httpx.get(f"{live_portal}/v1/models"), 401)


def test_invalid_key_is_401(live_portal, served):
    assert_openai_error(post_chat(live_portal, "sk-nope", CHAT), 401, "invalid_api_key")
    assert_openai_error(post_chat(live_portal, "Basic abc", CHAT), 401)


def test_revoked_key_is_401_at_once(live_portal, served, owner):
    created = owner.client().post("/api/keys/", {"name": "short"}, format="json").json()
    assert (
        httpx.get(
            f"{live_portal}/v1/models", headers={"Authorization": f"Bearer {created['key']}"}
        ).status_code
        == 200
    )
    owner.client().delete(f"/api/keys/{created['id']}/")
    assert_openai_error(post_chat(live_portal, created["key"], CHAT), 401)


def test_other_tenants_private_model_is_model_not_found(live_portal, owner, outsider):
    make_served_model(owner.user, "secret", visibility="private")
    body = dict(CHAT, model="olivia/secret")
    assert_openai_error(post_chat(live_portal, outsider.key, body), 404, "model_not_found", "model")
    assert_openai_error(
        httpx.get(
            f"{live_portal}/v1/models/olivia/secret",
            headers={"Authorization": f"Bearer {outsider.key}"},
        ),
        404,
    )
    listed = httpx.get(
        f"{live_portal}/v1/models", headers={"Authorization": f"Bearer {outsider.key}"}
    ).json()
    assert "olivia/secret" not in [m["id"] for m in listed["data"]]


def test_models_lists_what_the_key_may_use(live_portal, owner, org, teammate, outsider):
    make_served_model(owner.user, "mine", visibility="private")
    make_served_model(Organization.objects.get(pk=org.pk), "team", visibility="org")
    make_served_model(owner.user, "open", visibility="public")

    def listed(actor) -> set[str]:
        response = httpx.get(
            f"{live_portal}/v1/models", headers={"Authorization": f"Bearer {actor.key}"}
        )
        assert response.json()["object"] == "list"
        return {m["id"] for m in response.json()["data"]}

    assert listed(owner) == {"olivia/mine", "acme-lab/team", "olivia/open"}
    assert listed(teammate) == {"acme-lab/team", "olivia/open"}
    assert listed(outsider) == {"olivia/open"}


def test_unknown_model_is_404(live_portal, owner):
    assert_openai_error(
        post_chat(live_portal, owner.key, dict(CHAT, model="no/such")), 404, "model_not_found"
    )


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"", None),
        (b'{"messages": []}', "model"),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "olivia/pub", "messages": "hi"}', "messages"),
        (b'{"model": "olivia/pub", "messages": [{"content": "x"}]}', "messages[0]"),
        (
            b'{"model": "olivia/pub", "messages": [{"role": "user", "content": "x"}],'
            b' "stream": "yes"}',
            "stream",
        ),
        (
            b'{"model": "olivia/pub", "messages": [{"role": "user", "content": "x"}],'
            b' "max_tokens": "10"}',
            "max_tokens",
        ),
        (
            b'{"model": "olivia/pub", "messages": [{"role": "user", "content": "x"}],'
            b' "temperature": true}',
            "temperature",
        ),
        (b"\xff\xfe garbage", None),
    ],
)
def test_malformed_bodies_are_400(live_portal, served, owner, content, param):
    response = post_chat(
        live_portal, owner.key, content=content, headers={"Content-Type": "application/json"}
    )
    assert_openai_error(response, 400, param=param)


def test_completions_prompt_must_be_text_or_tokens(live_portal, served, owner):
    response = httpx.post(
        f"{live_portal}/v1/completions",
        headers={"Authorization": f"Bearer {owner.key}"},
        json={"model": "olivia/pub", "prompt": {"a": 1}},
    )
    assert_openai_error(response, 400, param="prompt")


def test_oversized_body_is_413(live_portal, served, owner, settings):
    big = {
        "model": "olivia/pub",
        "messages": [{"role": "user", "content": "x" * (settings.GATEWAY_MAX_BODY_BYTES + 1)}],
    }
    assert_openai_error(post_chat(live_portal, owner.key, big), 413, "request_too_large")


def test_wrong_method_is_405(live_portal, owner):
    response = httpx.get(
        f"{live_portal}/v1/chat/completions", headers={"Authorization": f"Bearer {owner.key}"}
    )
    assert_openai_error(response, 405)


def test_unknown_v1_path_is_404_in_openai_shape(live_portal, owner):
    response = httpx.get(
        f"{live_portal}/v1/nothing/here", headers={"Authorization": f"Bearer {owner.key}"}
    )
    assert_openai_error(response, 404)


def test_no_ready_replica_is_503_with_clear_message(live_portal, served, owner):
    response = post_chat(live_portal, owner.key, CHAT)
    assert_openai_error(response, 503, "no_replica_ready")
    assert "olivia/pub" in response.json()["error"]["message"]
    assert response.headers["retry-after"]


def test_replica_that_refuses_connections_is_503_not_500(live_portal, served, owner):
    from compute.agent.procs import free_port

    node = Node.objects.create(name="n1", token_hash="f" * 64, status="ready")
    Replica.objects.create(
        deployment=Deployment.objects.get(served_name="olivia/pub"),
        node=node,
        status=ReplicaStatus.READY,
        url=f"http://127.0.0.1:{free_port()}",
    )
    assert_openai_error(post_chat(live_portal, owner.key, CHAT), 503, "no_replica_ready")
