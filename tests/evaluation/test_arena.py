"""The arena: battles draw two distinct models and hide them until the vote, one vote
per battle by its own user, ratings with intervals from the votes, a per-user battle
rate limit, and — one slow test — real answers from a real engine through the gateway."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import override_settings

from compute.agent.procs import free_port, spawn, stop, wait_for
from evaluation.models import Arena, Battle
from evaluation.services import arena as arenas
from portal.models import APIKey
from tests.factories import model_repo

NAMES = ["olivia/ant", "olivia/bee", "olivia/cat"]


@pytest.fixture
def arena(owner: Any) -> Arena:
    for name in NAMES:
        model_repo(owner.user, name.split("/")[1])
    return arenas.create_arena(owner.user, owner.user, "duel", NAMES)


def battle(arena: Arena, user: Any, a: str, b: str, winner: str = "") -> Battle:
    return Battle.objects.create(
        arena=arena,
        user=user,
        model_a=a,
        model_b=b,
        prompt="hi",
        answer_a="1",
        answer_b="2",
        winner=winner,
    )


def test_a_battle_hides_its_models_until_its_user_votes(
    arena: Arena, owner: Any, teammate: Any
) -> None:
    fight = battle(arena, owner.user, "olivia/ant", "olivia/bee")
    url = f"/api/evaluation/battles/{fight.pk}/"

    before = owner.client().get(url).json()
    listed = owner.client().get("/api/evaluation/arenas/olivia/duel/battles/").json()
    not_theirs = teammate.client().post(url + "vote/", {"winner": "a"}, format="json")
    voted = owner.client().post(url + "vote/", {"winner": "b"}, format="json")
    again = owner.client().post(url + "vote/", {"winner": "a"}, format="json")

    assert (before["model_a"], before["model_b"]) == (None, None)
    assert (before["answer_a"], before["answer_b"]) == ("1", "2")
    assert listed["results"][0]["model_a"] is None
    assert not_theirs.status_code == 404
    assert voted.status_code == 200, voted.content
    assert (voted.json()["model_a"], voted.json()["model_b"]) == ("olivia/ant", "olivia/bee")
    assert voted.json()["winner"] == "b"
    assert again.status_code == 409
    assert owner.client().post(url + "vote/", {"winner": "c"}, format="json").status_code == 400


def test_votes_give_ratings_with_intervals_refitted_after_new_votes(
    arena: Arena, owner: Any
) -> None:
    for _ in range(6):
        battle(arena, owner.user, "olivia/ant", "olivia/bee", "b")
        battle(arena, owner.user, "olivia/cat", "olivia/bee", "b")
        battle(arena, owner.user, "olivia/cat", "olivia/ant", "a")
    battle(arena, owner.user, "olivia/ant", "olivia/bee", "a")
    battle(arena, owner.user, "olivia/ant", "olivia/cat", "tie")
    battle(arena, owner.user, "olivia/ant", "olivia/cat")  # not voted: not counted
    url = "/api/evaluation/arenas/olivia/duel/ratings/"

    body = owner.client().get(url).json()

    assert body["votes"] == 20
    assert [row["model"] for row in body["models"]] == ["olivia/bee", "olivia/cat", "olivia/ant"]
    bee = body["models"][0]
    assert (bee["battles"], bee["wins"], bee["ties"]) == (13, 12, 0)
    for row in body["models"]:
        assert row["lo"] <= row["rating"] <= row["hi"]
    assert sum(row["rating"] for row in body["models"]) == pytest.approx(3000, abs=0.1)
    arena.refresh_from_db()
    assert arena.ratings_votes == 20

    battle(arena, owner.user, "olivia/ant", "olivia/bee", "a")
    assert owner.client().get(url).json()["votes"] == 21


def test_outsider_gets_404_for_a_private_arena(arena: Arena, owner: Any, outsider: Any) -> None:
    Arena.objects.filter(pk=arena.pk).update(visibility="private")
    fight = battle(arena, owner.user, "olivia/ant", "olivia/bee")
    client = outsider.client()
    base = "/api/evaluation/arenas/olivia/duel/"

    assert client.get("/api/evaluation/arenas/").json()["count"] == 0
    for path in ("", "battles/", "ratings/"):
        assert client.get(base + path).status_code == 404, path
    assert client.post(base + "battles/", {"prompt": "hi"}, format="json").status_code == 404
    assert client.get(f"/api/evaluation/battles/{fight.pk}/").status_code == 404
    vote = client.post(f"/api/evaluation/battles/{fight.pk}/vote/", {"winner": "a"}, format="json")
    assert vote.status_code == 404
    assert client.delete(base).status_code == 404
    assert owner.client().get(base).status_code == 200


def test_an_arena_needs_two_distinct_models_its_creator_may_read(owner: Any, outsider: Any) -> None:
    model_repo(owner.user, "ant")
    model_repo(owner.user, "hidden", visibility="private")
    url = "/api/evaluation/arenas/"
    client = outsider.client()

    same = client.post(
        url, {"name": "a", "contenders": ["olivia/ant", "olivia/ant"]}, format="json"
    )
    hidden = client.post(
        url, {"name": "a", "contenders": ["olivia/ant", "olivia/hidden"]}, format="json"
    )
    created = owner.client().post(
        url, {"name": "a", "contenders": ["olivia/ant", "olivia/hidden@1"]}, format="json"
    )

    assert (same.status_code, hidden.status_code) == (400, 404)
    assert created.status_code == 201, created.content
    assert created.json()["contenders"] == ["olivia/ant", "olivia/hidden"]


def test_the_draw_is_two_distinct_models_fixed_by_the_battle_id() -> None:
    pairs = {arenas.draw(NAMES, f"battle-{i}") for i in range(40)}

    assert all(a != b for a, b in pairs)
    assert {name for pair in pairs for name in pair} == set(NAMES)
    assert arenas.draw(NAMES, "battle-x") == arenas.draw(list(reversed(NAMES)), "battle-x")


@override_settings(EVAL_ARENA_BATTLES_PER_MINUTE=2)
def test_battles_are_rate_limited_per_user_and_a_failed_answer_blocks_the_vote(
    arena: Arena, owner: Any, teammate: Any
) -> None:
    # Nothing listens on the gateway's port: both answers fail, quickly.
    with override_settings(EVAL_GATEWAY_URL=f"http://127.0.0.1:{free_port()}"):
        url = "/api/evaluation/arenas/olivia/duel/battles/"
        first = owner.client().post(url, {"prompt": "1+1?"}, format="json")
        owner.client().post(url, {"prompt": "2+2?"}, format="json")
        third = owner.client().post(url, {"prompt": "3+3?"}, format="json")
        someone_else = teammate.client().post(url, {"prompt": "1+1?"}, format="json")

    assert first.status_code == 201, first.content
    body = first.json()
    assert body["error"] == "Model A could not answer. Model B could not answer."
    assert (body["model_a"], body["model_b"]) == (None, None)
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) >= 1
    assert someone_else.status_code == 201
    fight = Battle.objects.get(pk=body["id"])
    assert fight.model_a != fight.model_b and {fight.model_a, fight.model_b} <= set(NAMES)
    # The battle's key was revoked once the answers were in.
    key = APIKey.objects.get(name=f"arena {fight.pk}")
    assert key.revoked_at is not None
    assert sorted(key.allowed_models) == sorted([fight.model_a, fight.model_b])
    vote = owner.client().post(
        f"/api/evaluation/battles/{fight.pk}/vote/", {"winner": "a"}, format="json"
    )
    assert vote.status_code == 409


@pytest.mark.e2e
def test_a_battle_gets_two_real_answers_through_the_gateway(
    live_portal: str, tiny_model_dir: Path, admin: Any, owner: Any, tmp_path: Path
) -> None:
    """Two tiny models served by a real node agent; the battle is started, answered,
    voted and rated over real HTTP."""
    from compute.models import ReplicaStatus
    from compute.services.deployments import deploy_model
    from compute.services.nodes import create_node
    from portal.services.registry import import_model_dir

    deployments = []
    for name in ("acme/tiny-a", "acme/tiny-b"):
        version = import_model_dir(tiny_model_dir, name, actor=None, visibility="public")
        deployments.append(deploy_model(admin.user, version.repo, replicas=1))
    _, token = create_node(admin.user, f"arena-node-{uuid.uuid4().hex[:6]}")
    log = tmp_path / "agent.log"
    agent = spawn(
        [
            sys.executable,
            "-m",
            "compute.agent",
            "--portal",
            live_portal,
            "--work-dir",
            str(tmp_path),
        ],
        log=log,
        env={**os.environ, "OPENMAAS_NODE_TOKEN": token},
    )
    headers = {"Authorization": f"Bearer {owner.key}"}
    api = f"{live_portal}/api/evaluation"
    try:

        def ready() -> bool:
            from compute.services.scheduler import reconcile_pool

            reconcile_pool()
            return all(
                d.replica_set.filter(status=ReplicaStatus.READY).exists() for d in deployments
            )

        wait_for(ready, timeout_s=240, what="two replicas", proc=agent, log=log, ignore=())
        with override_settings(EVAL_GATEWAY_URL=live_portal, EVAL_ARENA_BATTLES_PER_MINUTE=0):
            created = httpx.post(
                f"{api}/arenas/",
                json={"name": "tiny", "contenders": ["acme/tiny-a", "acme/tiny-b"]},
                headers=headers,
            )
            assert created.status_code == 201, created.text

            def answered() -> Any:
                started = httpx.post(
                    f"{api}/arenas/olivia/tiny/battles/",
                    json={"prompt": "你好，请介绍一下你自己。"},
                    headers=headers,
                    timeout=180,
                )
                assert started.status_code == 201, started.text
                # The gateway learns of new replicas within its route TTL: retry until then.
                return None if started.json()["error"] else started.json()

            fight = wait_for(answered, timeout_s=60, what="two answers", interval_s=1, ignore=())
        assert fight["answer_a"] and fight["answer_b"]
        assert (fight["model_a"], fight["model_b"]) == (None, None)
        voted = httpx.post(
            f"{api}/battles/{fight['id']}/vote/", json={"winner": "a"}, headers=headers
        )
        assert voted.status_code == 200, voted.text
        assert {voted.json()["model_a"], voted.json()["model_b"]} == {"acme/tiny-a", "acme/tiny-b"}
        table = httpx.get(f"{api}/arenas/olivia/tiny/ratings/", headers=headers).json()
        assert table["votes"] == 1
        assert table["models"][0]["model"] == voted.json()["model_a"]
    finally:
        stop(agent, grace_s=20)
