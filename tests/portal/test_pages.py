"""The portal's pages: sign-up, log-in and API key management in the browser."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.test import Client

from portal.models import APIKey


def test_sign_up_page_creates_user_and_logs_in(db):
    client = Client()
    assert client.get("/signup/").status_code == 200
    response = client.post("/signup/", {"username": "lihua", "password": "a-long-pass-42"})
    assert response.status_code == 302
    assert client.get("/keys/").status_code == 200


def test_sign_up_page_shows_errors_not_500(db, owner):
    client = Client()
    taken = client.post("/signup/", {"username": "olivia", "password": "a-long-pass-42"})
    assert taken.status_code == 200 and "already taken" in taken.content.decode()
    weak = client.post("/signup/", {"username": "new1", "password": "1"})
    assert weak.status_code == 200
    assert not get_user_model().objects.filter(username="new1").exists()


def test_keys_page_shows_new_key_once_and_revokes(db, owner):
    client = Client()
    client.force_login(owner.user)
    page = client.post("/keys/", {"name": "laptop"}).content.decode()
    raw = re.search(r'<pre id="new-key">(sk-[^<]+)</pre>', page).group(1)
    key = APIKey.objects.get(user=owner.user, name="laptop")
    assert raw not in client.get("/keys/").content.decode()
    assert client.post(f"/keys/{key.pk}/revoke/").status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_outsider_cannot_revoke_through_the_page(db, owner, outsider):
    key = APIKey.objects.get(user=owner.user)
    client = Client()
    client.force_login(outsider.user)
    assert client.post(f"/keys/{key.pk}/revoke/").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_keys_page_needs_login(db):
    assert Client().get("/keys/").status_code == 302


def test_home_lists_only_visible_models(db, owner, outsider):
    from portal.models import ModelRepo

    for name, visibility in (("open-one", "public"), ("hidden-one", "private")):
        repo = ModelRepo(name=name, visibility=visibility)
        repo.set_owner(owner.user)
        repo.save()
    client = Client()
    client.force_login(outsider.user)
    page = client.get("/").content.decode()
    assert "olivia/open-one" in page and "olivia/hidden-one" not in page


def test_openapi_schema_and_docs_are_served(db):
    client = Client()
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in (
        "/api/keys/",
        "/api/models/",
        "/api/compute/deployments/",
        "/api/compute/agent/heartbeat",
    ):
        assert path in text
    assert client.get("/api/docs/").status_code == 200


def test_openapi_schema_has_no_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))
    assert (tmp_path / "s.yaml").read_text().startswith("openapi:")


def test_model_page_shows_card_versions_and_hides_private_models(
    db, owner, outsider, tiny_model_dir
):
    from portal.services.registry import import_model_dir

    import_model_dir(tiny_model_dir, "olivia/tiny", actor=owner.user, visibility="private")
    client = Client()
    client.force_login(owner.user)
    page = client.get("/models/olivia/tiny/")
    assert page.status_code == 200
    assert "model.safetensors" in page.content.decode() and "v1" in page.content.decode()
    client.force_login(outsider.user)
    assert client.get("/models/olivia/tiny/").status_code == 404
    assert Client().get("/models/olivia/tiny/").status_code == 404
    assert Client().get("/models/nobody/nothing/").status_code == 404


def test_usage_page_needs_login_and_serves_its_chart_library_locally(db, owner):
    assert Client().get("/usage/").status_code == 302
    client = Client()
    client.force_login(owner.user)
    page = client.get("/usage/")
    assert page.status_code == 200 and "/usage/" in page.content.decode()
    library = client.get("/static/vendor/chartjs/chart.umd.min.js")
    assert library.status_code == 200
    assert b"Chart.js v4" in b"".join(library.streaming_content)[:200]
