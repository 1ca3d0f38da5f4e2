from __future__ import annotations

from portal.models import Membership, Role


def test_creator_owns_new_organisation(owner):
    response = owner.client().post("/api/orgs/", {"name": "new-lab"}, format="json")
    assert response.status_code == 201
    assert response.json()["role"] == "owner"
    assert Membership.objects.get(organization__name="new-lab").role == Role.OWNER


def test_org_name_cannot_take_a_username(owner, outsider):
    response = owner.client().post("/api/orgs/", {"name": outsider.user.username}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "name_taken"


def test_owner_adds_member_and_member_cannot_add_others(owner, org, outsider, teammate):
    url = f"/api/orgs/{org.name}/members/"
    assert (
        owner.client().post(url, {"username": "oscar", "role": "member"}, format="json").status_code
        == 200
    )
    assert Membership.objects.filter(organization=org, user=outsider.user).exists()
    response = teammate.client().post(url, {"username": "olivia", "role": "admin"}, format="json")
    assert response.status_code == 403


def test_outsider_gets_404_for_an_organisation(org, outsider):
    assert outsider.client().get(f"/api/orgs/{org.name}/").status_code == 404
    response = outsider.client().post(
        f"/api/orgs/{org.name}/members/", {"username": "oscar", "role": "owner"}, format="json"
    )
    assert response.status_code == 404


def test_last_owner_cannot_leave(owner, org):
    response = owner.client().delete(f"/api/orgs/{org.name}/members/olivia/")
    assert response.status_code == 409


def test_signup_and_login_over_the_api(anon):
    response = anon.post(
        "/api/auth/signup/", {"username": "newbie", "password": "a-long-pass-42"}, format="json"
    )
    assert response.status_code == 201
    assert (
        anon.post(
            "/api/auth/login/", {"username": "newbie", "password": "wrong"}, format="json"
        ).status_code
        == 401
    )
    assert (
        anon.post(
            "/api/auth/login/", {"username": "newbie", "password": "a-long-pass-42"}, format="json"
        ).status_code
        == 200
    )
    assert anon.get("/api/auth/me/").json()["username"] == "newbie"


def test_signup_rejects_weak_password_and_bad_name(anon):
    weak = anon.post("/api/auth/signup/", {"username": "x1", "password": "123"}, format="json")
    assert weak.status_code == 400 and weak.json()["code"] == "weak_password"
    bad = anon.post(
        "/api/auth/signup/", {"username": "../etc", "password": "a-long-pass-42"}, format="json"
    )
    assert bad.status_code == 400


def test_malformed_json_to_api_is_400(owner):
    response = owner.client().generic(
        "POST", "/api/orgs/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400


def test_oversized_api_body_is_413(owner, settings):
    body = '{"name": "' + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + '"}'
    response = owner.client().generic("POST", "/api/orgs/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def test_wrong_types_to_api_are_400(owner):
    response = owner.client().post(
        "/api/keys/", {"name": "k", "expires_in_days": "soon"}, format="json"
    )
    assert response.status_code == 400
    assert "expires_in_days" in response.json()
