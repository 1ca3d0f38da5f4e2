"""The playground page and the browser session as a ``/v1`` credential: accepted on
``/v1/models`` and ``/v1/chat/completions`` only with a matching CSRF token and a
same-origin ``Origin``/``Referer``, refused (403/401, OpenAI's shape) otherwise."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import Client

from portal.limits import scripts
from portal.services.keys import sync_redis
from tests.factories import deployment
from tests.portal.test_gateway import assert_openai_error

CHAT = {"model": "olivia/mine", "messages": [{"role": "user", "content": "你好"}]}


class Browser:
    """A signed-in browser as the gateway sees it: session and CSRF cookies, and the
    page's (masked) CSRF token."""

    def __init__(self, url: str, user: Any) -> None:
        django_client = Client()
        django_client.force_login(user)
        self.url = url
        session = django_client.cookies["sessionid"].value
        self.http = httpx.Client(base_url=url, timeout=10, cookies={"sessionid": session})
        page = self.http.get("/playground/")
        assert page.status_code == 200
        self.page = page.text
        self.token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"X-CSRFToken": self.token, "Origin": self.url, **extra}

    def models(self, headers: dict[str, str]) -> httpx.Response:
        return self.http.get("/v1/models", headers=headers)

    def chat(self, headers: dict[str, str], path: str = "/v1/chat/completions") -> httpx.Response:
        return self.http.post(path, json=CHAT, headers=headers)


@pytest.fixture
def browser(live_portal: str, owner: Any) -> Iterator[Browser]:
    deployment(owner.user, "mine", visibility="private")
    browser = Browser(live_portal, owner.user)
    yield browser
    browser.http.close()


def test_playground_needs_sign_in_and_carries_no_api_key(db, owner):
    deployment(owner.user, "mine")
    client = Client()
    assert client.get("/playground/").status_code == 302
    assert "/playground/" not in client.get("/models/olivia/mine/").content.decode()
    client.force_login(owner.user)
    model_page = client.get("/models/olivia/mine/").content.decode()
    assert 'href="/playground/?model=olivia/mine"' in model_page
    page = client.get("/playground/?model=olivia/mine")
    text = page.content.decode()
    assert page.status_code == 200 and "csrftoken" in page.cookies
    assert "portal/playground.js" in text and 'data-model="olivia/mine"' in text
    assert "sk-" not in text
    assert 'href="/playground/"' in client.get("/").content.decode()


def test_session_lists_and_chats_with_token_and_same_origin(browser):
    listed = browser.models({"X-CSRFToken": browser.token, "Referer": browser.url + "/playground/"})
    assert listed.status_code == 200, listed.text
    assert "olivia/mine" in {m["id"] for m in listed.json()["data"]}
    # Past authentication: the model has no ready replica yet.
    assert_openai_error(browser.chat(browser.headers()), 503, "no_replica_ready")
    # The cookie's unmasked secret is as good as the page's masked token.
    unmasked = browser.headers(**{"X-CSRFToken": browser.http.cookies["csrftoken"]})
    assert_openai_error(browser.chat(unmasked), 503, "no_replica_ready")


def test_session_lists_only_what_the_user_may_use(live_portal, owner, outsider):
    deployment(owner.user, "mine", visibility="private")
    deployment(owner.user, "open")
    outsiders = Browser(live_portal, outsider.user)
    listed = outsiders.models(outsiders.headers())
    assert {m["id"] for m in listed.json()["data"]} == {"olivia/open"}
    assert_openai_error(outsiders.chat(outsiders.headers()), 404, "model_not_found")


@pytest.mark.parametrize(
    "change",
    [
        {"X-CSRFToken": None},
        {"X-CSRFToken": "x" * 32},
        {"Origin": "http://evil.example"},
        {"Origin": None},
        {"Origin": None, "Referer": "http://evil.example/playground/"},
    ],
    ids=["no-token", "wrong-token", "foreign-origin", "no-origin-or-referer", "foreign-referer"],
)
def test_session_without_same_origin_proof_is_403(browser, change):
    headers = {k: v for k, v in {**browser.headers(), **change}.items() if v is not None}
    assert_openai_error(browser.chat(headers), 403, "csrf_failed")
    assert_openai_error(browser.models(headers), 403, "csrf_failed")


def test_session_is_not_a_credential_elsewhere_in_v1(browser):
    assert_openai_error(browser.chat(browser.headers(), "/v1/completions"), 401, "missing_api_key")
    other = browser.http.get("/v1/models/olivia/mine", headers=browser.headers())
    assert_openai_error(other, 401, "missing_api_key")


def test_ended_session_or_inactive_user_is_401(browser, owner):
    owner.user.is_active = False
    owner.user.save(update_fields=["is_active"])
    assert_openai_error(browser.chat(browser.headers()), 401, "session_expired")
    owner.user.is_active = True
    owner.user.save(update_fields=["is_active"])
    logout = browser.http.post("/accounts/logout/", headers=browser.headers())
    assert logout.status_code in (200, 302)
    assert_openai_error(browser.models(browser.headers()), 401, "session_expired")


def test_pages_speak_english_when_the_browser_asks(db, owner):
    client = Client()
    client.force_login(owner.user)
    chinese = client.get("/playground/").content.decode()
    assert '<html lang="zh-hans">' in chinese and "发送" in chinese
    english = client.get("/playground/", HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert '<html lang="en">' in english and ">Send<" in english and "发送" not in english
    switched = client.post("/i18n/setlang/", {"language": "en", "next": "/playground/"})
    assert switched.status_code == 302
    assert ">Send<" in client.get("/playground/").content.decode()


def test_made_up_sessions_count_as_failed_authentications(browser, settings):
    settings.GATEWAY_AUTH_FAILURES_PER_MINUTE = 2
    fails = scripts.AUTH_FAIL_PREFIX + "127.0.0.1"
    sync_redis().delete(fails)
    try:
        browser.http.cookies.set("sessionid", "made-up-session-id")
        codes = [browser.models(browser.headers()).status_code for _ in range(2)]
        assert codes == [401, 401]
        assert_openai_error(
            browser.models(browser.headers()), 429, "too_many_failed_authentications"
        )
    finally:
        sync_redis().delete(fails)
