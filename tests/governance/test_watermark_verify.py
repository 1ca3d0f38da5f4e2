"""The text watermark through the portal: switched on per deployment (transformers only),
its key kept out of every answer, and ``/api/governance/verify`` finding it in an edited
answer of a real watermarked engine, for callers who may see that deployment only."""

from __future__ import annotations

import hashlib
import io
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from compute.agent.procs import wait_for
from compute.api.agent import _desired
from compute.models import Deployment, Node, Replica, ReplicaStatus
from compute.routing import _query_routes
from governance.labels.text import text_sha256
from governance.models import Provenance
from governance.services import events, provenance
from portal.models import ModelFile, ModelRepo
from portal.services.keys import sync_redis
from portal.storage import store
from tests.compute.conftest import ENGINE_API_KEY, SERVED_NAME
from tests.conftest import WATERMARK_KEY
from tests.factories import model_repo
from tests.governance.test_verify import stranger

URL = "/api/governance/verify"
HUMAN = (
    "The committee met on Tuesday to review the budget for the coming year. Most of the "
    "discussion was about the library, whose roof has leaked since the storms in March, "
    "and about whether the summer reading programme should run for six weeks or eight. "
    "In the end the members agreed to repair the roof first and to ask the volunteers "
    "what they could manage before deciding on the programme. The minutes will be posted "
    "on the notice board next to the town hall by Friday afternoon."
)


@pytest.fixture(scope="module")
def marked_text(watermark_engine: Any) -> str:
    """200 tokens of the tiny model from the engine that plants :data:`WATERMARK_KEY`."""
    body = {
        "model": SERVED_NAME, "prompt": "Once upon a time", "max_tokens": 200,
        "temperature": 1.0, "seed": 1, "ignore_eos": True,
    }  # fmt: skip
    auth = {"Authorization": f"Bearer {ENGINE_API_KEY}"}
    answer = httpx.post(
        f"{watermark_engine.base_url}/v1/completions", json=body, headers=auth, timeout=120
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["choices"][0]["text"])


def edited(text: str) -> str:
    """``text`` with two of its words replaced and a line appended (a reader's edit; the
    tiny model writes few spaces, so each of its "words" is several tokens)."""
    words = text.split(" ")
    for i in (1, len(words) - 2):
        words[i] = "edited"
    return " ".join(words) + "\nShared by a reader."


@pytest.fixture
def node(db: Any) -> Node:
    return Node.objects.create(
        name="cpu", token_hash="c" * 64, status="ready", last_heartbeat_at=timezone.now(),
        engines=["transformers"], max_replicas=16,
    )  # fmt: skip


def with_tokenizer(repo: Any, tiny_model_dir: Path) -> None:
    """Store the tiny model's tokenizer.json as a file of the repo's version."""
    data = (tiny_model_dir / "tokenizer.json").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = f"test-watermark/{uuid.uuid4().hex}/{digest}"
    store().put_bytes("models", key, data)
    version = repo.versions.get()
    ModelFile.objects.create(
        version=version, path="tokenizer.json", size=len(data), sha256=digest, object_key=key
    )


def deploy(actor: Any, model: str, engine: str = "transformers", **args: Any) -> Any:
    return actor.client().post(
        "/api/compute/deployments/",
        {"model": model, "engine": engine, "engine_args": args},
        format="json",
    )


@pytest.fixture
def private_marked(org: Any, owner: Any, node: Node, tiny_model_dir: Path) -> Deployment:
    """A private model of acme-lab deployed with the watermark on, keyed like the session's
    watermarked engine (as if that engine were its replica)."""
    repo = model_repo(org, "tiny", visibility="private")
    with_tokenizer(repo, tiny_model_dir)
    response = deploy(owner, "acme-lab/tiny", watermark=True)
    assert response.status_code == 201, response.content
    Deployment.objects.filter(pk=response.json()["id"]).update(watermark_key=WATERMARK_KEY)
    return Deployment.objects.get(pk=response.json()["id"])


def verify(client: Any, text: str) -> dict[str, Any]:
    response = client.post(URL, {"text": text}, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


# --- switching it on ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "args", "message"),
    [
        ("vllm", {"watermark": True}, "'watermark'"),
        ("auto", {"watermark": True}, "'watermark'"),
        ("vllm", {"watermark_gamma": 0.5}, "'watermark_gamma'"),
        ("transformers", {"watermark_gamma": 0.5}, "need watermark=True"),
        ("transformers", {"watermark": True, "watermark_delta": 100}, "watermark_delta"),
    ],
)
def test_watermark_is_a_transformers_engine_option_checked_at_deploy_time(
    owner, node, engine, args, message
):
    model_repo(owner.user, "safe", visibility="public")
    response = deploy(owner, "olivia/safe", engine, **args)
    assert response.status_code == 400, response.content
    assert response.json()["param"] == "engine_args" and message in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_the_key_goes_to_the_node_only_for_watermarked_deployments_and_never_to_users(
    owner, admin, node
):
    model_repo(owner.user, "safe", visibility="public")
    marked = Deployment.objects.get(pk=deploy(owner, "olivia/safe", watermark=True).json()["id"])
    plain = Deployment.objects.get(pk=deploy(owner, "olivia/safe").json()["id"])
    assert len(marked.watermark_key) >= 32 and marked.watermark_key != plain.watermark_key
    replica = Replica.objects.get(deployment=marked)
    assert _desired(node, replica)["watermark_key"] == marked.watermark_key
    assert _desired(node, Replica.objects.get(deployment=plain))["watermark_key"] == ""
    for actor in (owner, admin):
        for url in (
            f"/api/compute/deployments/{marked.pk}/",
            "/api/compute/deployments/",
            "/api/compute/engines/",
        ):
            body = actor.client().get(url).content.decode()
            assert marked.watermark_key not in body and plain.watermark_key not in body
    assert marked.engine_args == {"watermark": True}


# --- detection ---------------------------------------------------------------------------


def test_an_edited_watermarked_answer_is_detected_through_verify(
    private_marked, owner, marked_text, watermark_engine
):
    # given a watermarked answer that a reader edited (so its fingerprint is unknown)
    text = edited(marked_text)
    assert text != marked_text
    # when its model's owner verifies it
    body = verify(owner.client(), text)
    # then the registry does not know it, but the detector finds the watermark
    assert body["found"] is False
    mark = body["watermark"]
    assert mark["detected"] is True and mark["z_score"] >= 4, mark
    assert mark["deployment"] == private_marked.served_name and mark["model"] == "acme-lab/tiny"
    assert mark["tokens_scored"] >= 100 and mark["green_fraction"] > 0.25
    assert mark["applied"] is None and 0 <= mark["p_value"] < 1e-4
    assert WATERMARK_KEY not in str(body) and WATERMARK_KEY not in watermark_engine.logs()


def test_human_text_is_not_taken_for_watermarked(private_marked, owner):
    for text in (HUMAN, HUMAN.upper(), "长江是中国最长的河流，全长约六千三百公里。" * 5):
        mark = verify(owner.client(), text)["watermark"]
        assert mark["detected"] is False and mark["z_score"] < 4, mark
        assert mark["deployment"] is None and mark["model"] is None


def test_outsiders_learn_nothing_of_another_organisations_private_deployment(
    private_marked, owner, outsider, marked_text
):
    text = edited(marked_text)
    assert verify(owner.client(), text)["watermark"]["detected"] is True
    for client in (outsider.client(), stranger()):
        body = verify(client, text)
        assert body["watermark"] is None  # no watermarked deployment it may see
        assert private_marked.served_name not in str(body)


def test_a_public_watermarked_deployment_is_tried_for_anonymous_callers(
    private_marked, marked_text
):
    ModelRepo.objects.filter(pk=private_marked.model_version.repo_id).update(visibility="public")
    mark = verify(stranger(), edited(marked_text))["watermark"]
    assert mark["detected"] is True and mark["deployment"] == private_marked.served_name


def test_registry_text_says_whether_its_generation_was_watermarked(private_marked, owner):
    for watermarked, text in ((True, "a watermarked answer"), (False, "a plain answer")):
        fingerprint = text_sha256(text)
        content_id = f"aigc-{uuid.uuid4().hex}"
        Provenance.objects.create(
            content_id=content_id, ts=timezone.now(), kind="text", served_name="s",
            text_sha256=fingerprint, label=provenance.label_for(content_id, fingerprint),
            watermarked=watermarked,
        )  # fmt: skip
        for body in (
            verify(owner.client(), text),
            owner.client().post(URL, {"content_id": content_id}, format="json").json(),
        ):
            assert body["found"] is True
            assert body["watermark"]["applied"] is watermarked
            assert body["watermark"]["detected"] is None


def test_the_verify_page_shows_the_watermark(private_marked, owner, marked_text):
    client = owner.client()
    client.force_login(owner.user)
    page = client.post("/governance/verify/", {"text": edited(marked_text)})
    assert page.status_code == 200
    found = re.search(r'id="gv-verify-watermark"[^>]*data-detected="(\w*)"', page.content.decode())
    assert found and found.group(1) == "true"
    assert private_marked.served_name in page.content.decode()


# --- provenance --------------------------------------------------------------------------


def test_routes_and_provenance_rows_record_the_watermark(private_marked, owner):
    routes = _query_routes()  # load_routes closes the connection (it runs in a thread)
    assert routes[private_marked.served_name].watermarked is True
    sync_redis().delete(events.STREAM)
    now = time.time()
    events.publish(
        [
            {"kind": "provenance", "content_id": "aigc-wm", "ts": now, "watermarked": True},
            {"kind": "provenance", "content_id": "aigc-plain", "ts": now},
        ]
    )
    events.drain(min_idle_ms=0)
    rows = dict(Provenance.objects.values_list("content_id", "watermarked"))
    assert rows["aigc-wm"] is True and rows["aigc-plain"] is False


def test_a_watermarked_answer_through_the_gateway_is_registered_and_detected(
    live_portal, owner, watermark_engine, tiny_model_dir
):
    # given a public model deployed with the watermark, served by the watermarked engine
    repo = model_repo(owner.user, "tiny", "public")
    with_tokenizer(repo, tiny_model_dir)
    dep = Deployment.objects.create(
        model_version=repo.versions.get(),
        served_name=SERVED_NAME,
        engine="transformers",
        engine_args={"watermark": True},
        watermark_key=WATERMARK_KEY,
    )
    node = Node.objects.create(name="n1", token_hash="f" * 64, status="ready")
    Replica.objects.create(
        deployment=dep,
        node=node,
        status=ReplicaStatus.READY,
        url=watermark_engine.base_url,
        secret=ENGINE_API_KEY,
    )
    # when a user asks for an answer through the gateway
    body = {
        "model": SERVED_NAME, "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 200, "temperature": 1.0, "seed": 3, "ignore_eos": True,
    }  # fmt: skip
    answer = httpx.post(
        f"{live_portal}/v1/chat/completions",
        headers={"Authorization": f"Bearer {owner.key}"},
        json=body,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    text = answer.json()["choices"][0]["message"]["content"]
    content_id = answer.json()["aigc"]["ProduceID"]

    # then its provenance records the watermark, and verify says so for the exact text
    def registered() -> Provenance | None:
        events.drain(min_idle_ms=0)
        return Provenance.objects.filter(content_id=content_id).first()

    row = wait_for(registered, timeout_s=10, what="provenance", interval_s=0.05)
    assert row.watermarked is True
    exact = verify(stranger(), text)
    assert exact["found"] is True and exact["watermark"]["applied"] is True
    # and the detector finds it in the edited text
    mark = verify(stranger(), edited(text))["watermark"]
    assert mark["detected"] is True and mark["deployment"] == SERVED_NAME, mark


def test_an_unlabelled_text_file_goes_through_the_detector(private_marked, owner, marked_text):
    upload = io.BytesIO(edited(marked_text).encode())
    upload.name = "answer.txt"
    response = owner.client().post(URL, {"file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "unlabelled" and body["watermark"]["detected"] is True
