from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from portal.models import APIKey


def test_created_key_is_shown_once_and_stored_hashed(owner):
    response = owner.client().post("/api/keys/", {"name": "ci"}, format="json")
    assert response.status_code == 201
    raw = response.json()["key"]
    assert raw.startswith("sk-") and len(raw) > 40
    stored = APIKey.objects.get(pk=response.json()["id"])
    assert raw not in (stored.key_hash, stored.prefix)
    listing = owner.client().get("/api/keys/").json()["results"]
    assert all("key" not in item for item in listing)
    assert {item["prefix"] for item in listing} >= {raw[:11]}


def test_revoked_key_no_longer_authenticates(owner):
    created = owner.client().post("/api/keys/", {"name": "tmp"}, format="json").json()
    client = owner.client()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert client.get("/api/auth/me/").status_code == 200
    assert owner.client().delete(f"/api/keys/{created['id']}/").status_code == 204
    assert client.get("/api/auth/me/").status_code == 401


def test_expired_key_is_refused(owner):
    key = APIKey.objects.get(user=owner.user)
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save()
    assert owner.client().get("/api/auth/me/").status_code == 401


def test_outsider_cannot_revoke_someone_elses_key(owner, outsider):
    key = APIKey.objects.get(user=owner.user)
    assert outsider.client().delete(f"/api/keys/{key.pk}/").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_garbage_bearer_is_401_not_anonymous(anon):
    anon.credentials(HTTP_AUTHORIZATION="Bearer sk-not-a-real-key")
    assert anon.get("/api/auth/me/").status_code == 401


def test_create_api_key_command_prints_a_working_key(owner, capsys):
    from django.core.management import call_command

    call_command("create_api_key", owner.user.username, "--name", "cli")
    raw = capsys.readouterr().out.strip()
    assert APIKey.objects.filter(user=owner.user, name="cli").exists()
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/auth/me/").json()["username"] == owner.user.username
