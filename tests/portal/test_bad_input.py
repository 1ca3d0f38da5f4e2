"""Bad input to ``/api`` gets a 4xx in DRF's shape over real HTTP, never a 500; login
refuses cross-site form posts."""

from __future__ import annotations

import httpx
import pytest

from portal.models import Membership
from tests.factories import deployment

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = "9223372036854775808"


def api(url: str, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


QUERIES = [
    f"limit={HUGE}",
    f"offset={HUGE}",
    f"limit={HUGE}&offset={HUGE}",
    "offset=-5",
    "limit=-1",
]


def test_out_of_range_paging_is_clamped_on_every_list(live_portal, owner, org):
    deployment(owner.user, "pub")
    lists = [
        "/api/models/",
        "/api/keys/",
        "/api/orgs/",
        f"/api/orgs/{org.name}/members/",
        "/api/models/olivia/pub/versions/",
        "/api/compute/deployments/",
    ]
    with api(live_portal, owner.key) as client:
        for path in lists:
            for query in QUERIES:
                response = client.get(f"{path}?{query}")
                assert response.status_code == 200, (path, query, response.text)
                assert set(response.json()) == {"count", "next", "previous", "results"}
    for query in QUERIES:
        assert httpx.get(f"{live_portal}/api/models/?{query}").status_code == 200


def test_huge_limit_is_clamped_to_the_maximum(live_portal, owner):
    with api(live_portal, owner.key) as client:
        assert client.get(f"/api/keys/?limit={HUGE}").json()["count"] == 1


@pytest.mark.parametrize("path", ["/api/auth/login/", "/api/auth/signup/", "/api/keys/"])
def test_deeply_nested_json_is_400(live_portal, owner, path):
    with api(live_portal, owner.key if path == "/api/keys/" else None) as client:
        response = client.post(path, content=DEEP, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"username": "\\ud800", "password": "a-long-pass-42"}',
        b'{"username": "x\xed\xa0\x80", "password": "a-long-pass-42"}',
        b'{"username": "nan", "password": NaN}',
    ],
    ids=["escaped-lone-surrogate", "encoded-surrogate", "nan"],
)
def test_unstorable_strings_are_400(live_portal, db, raw):
    response = httpx.post(
        f"{live_portal}/api/auth/signup/",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text


def test_members_post_checks_permission_before_the_body(live_portal, org, teammate, outsider):
    url = f"/api/orgs/{org.name}/members/"
    with api(live_portal, teammate.key) as client:
        response = client.post(url, json={"username": "oscar"})
    assert response.status_code == 403, response.text
    with api(live_portal, outsider.key) as client:
        assert client.post(url, json={"username": "oscar"}).status_code == 404


def test_members_post_without_role_is_400_for_a_manager(live_portal, org, owner, outsider):
    with api(live_portal, owner.key) as client:
        response = client.post(f"/api/orgs/{org.name}/members/", json={"username": "oscar"})
        assert response.status_code == 400, response.text
        assert "role" in response.json()
        added = client.post(
            f"/api/orgs/{org.name}/members/", json={"username": "oscar", "role": "member"}
        )
        assert added.status_code == 200
        assert added.json()["username"] == "oscar"
    assert Membership.objects.filter(organization=org, user=outsider.user).exists()


def test_members_list_is_paginated(live_portal, org, owner, teammate):
    with api(live_portal, owner.key) as client:
        body = client.get(f"/api/orgs/{org.name}/members/?limit=1").json()
    assert body["count"] == 2
    assert [m["username"] for m in body["results"]] == ["olivia"]
    assert body["next"]


def test_cross_site_form_login_does_not_log_in(live_portal, owner):
    response = httpx.post(
        f"{live_portal}/api/auth/login/",
        data={"username": "olivia", "password": "pw-olivia"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "csrf_failed"
    assert "sessionid" not in response.cookies


def test_json_login_from_a_foreign_origin_is_refused(live_portal, owner):
    response = httpx.post(
        f"{live_portal}/api/auth/login/",
        json={"username": "olivia", "password": "pw-olivia"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "sessionid" not in response.cookies


def test_json_and_same_origin_form_logins_work(live_portal, owner):
    creds = {"username": "olivia", "password": "pw-olivia"}
    response = httpx.post(f"{live_portal}/api/auth/login/", json=creds)
    assert response.status_code == 200, response.text
    assert "sessionid" in response.cookies
    with httpx.Client(base_url=live_portal) as browser:
        browser.get("/accounts/login/")  # sets the CSRF cookie, as the page would
        token = browser.cookies["csrftoken"]
        response = browser.post(
            "/api/auth/login/",
            data=creds,
            headers={"X-CSRFToken": token, "Origin": live_portal, "Referer": live_portal + "/"},
        )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/api/usage/", "/api/models/", "/api/keys/"])
def test_unknown_format_parameter_is_400_naming_the_formats(live_portal, owner, path):
    response = httpx.get(
        f"{live_portal}{path}?format=xml",
        headers={"Authorization": f"Bearer {owner.key}"},
    )
    assert response.status_code == 400, response.text
    assert "json" in response.json()["format"][0]
