"""Login throttling (django-axes) over real HTTP with the real database: after
``AXES_FAILURE_LIMIT`` failures for one username from one address, both the API login and
the web login answer 429 with Retry-After, even with the right password; another
username is not affected."""

from __future__ import annotations

import httpx
from django.conf import settings


def api_login(url: str, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/auth/login/", json={"username": username, "password": password}, timeout=30
    )


def web_login(url: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.get("/accounts/login/")
        return browser.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{url}/accounts/login/", "Origin": url},
        )


def test_api_login_locks_after_the_failure_limit(live_portal, owner, outsider):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert api_login(live_portal, "olivia", "wrong").status_code == 401
    locked = api_login(live_portal, "olivia", "wrong")
    assert locked.status_code == 429, locked.text
    assert locked.json()["code"] == "login_locked"
    assert int(locked.headers["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())
    right_password = api_login(live_portal, "olivia", "pw-olivia")
    assert right_password.status_code == 429
    assert "sessionid" not in right_password.cookies
    assert api_login(live_portal, "oscar", "pw-oscar").status_code == 200


def test_web_login_shows_a_lockout_page(live_portal, owner):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert web_login(live_portal, "olivia", "wrong").status_code == 200  # form again
    page = web_login(live_portal, "olivia", "wrong")
    assert page.status_code == 429, page.text[:500]
    assert "Too many failed login attempts" in page.text
    assert page.headers["Retry-After"]
    assert web_login(live_portal, "olivia", "pw-olivia").status_code == 429


def test_a_success_resets_the_count(live_portal, owner):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        api_login(live_portal, "olivia", "wrong")
    assert api_login(live_portal, "olivia", "pw-olivia").status_code == 200
    assert api_login(live_portal, "olivia", "wrong").status_code == 401
