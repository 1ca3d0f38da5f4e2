"""Every ``/v1`` request answers OpenAI's JSON error shape: no HTML, no CSRF page, no redirect."""

from __future__ import annotations

import httpx

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
UNKNOWN_PATHS = (
    "/v1",
    "/v1/",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/nothing/here/",
    "/v1/chat/completions/",
    "/v1/completions/",
)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), where
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, where
    assert error["code"] == code, where
    return error


def test_unknown_v1_paths_are_openai_404_for_every_method(live_portal, owner):
    with httpx.Client(base_url=live_portal, follow_redirects=False) as client:
        for path in UNKNOWN_PATHS:
            for method in METHODS:
                for headers in ({"Authorization": f"Bearer {owner.key}"}, {}):
                    response = client.request(method, path, headers=headers, json={"x": 1})
                    assert_openai_error(response, 404, "unknown_url")


def test_unknown_v1_post_with_a_session_cookie_is_not_a_csrf_page(live_portal, owner):
    """A browser session without a CSRF token still gets JSON, not Django's 403 page."""
    with httpx.Client(base_url=live_portal) as client:
        client.cookies.set("sessionid", "whatever")
        client.cookies.set("csrftoken", "x" * 32)
        response = client.post("/v1/embeddings", json={"input": "hi"})
    assert_openai_error(response, 404, "unknown_url")


def test_trailing_slash_on_a_gateway_path_names_the_real_path(live_portal, owner):
    response = httpx.post(
        f"{live_portal}/v1/chat/completions/",
        headers={"Authorization": f"Bearer {owner.key}"},
        json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
    )
    error = assert_openai_error(response, 404, "unknown_url")
    assert "Did you mean /v1/chat/completions " in error["message"]


def test_gateway_paths_answer_405_in_openai_shape_for_other_methods(live_portal, owner):
    headers = {"Authorization": f"Bearer {owner.key}"}
    with httpx.Client(base_url=live_portal, headers=headers) as client:
        for path in ("/v1/chat/completions", "/v1/completions"):
            for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
                assert_openai_error(client.request(method, path), 405, "method_not_allowed")
        for path in ("/v1/models", "/v1/models/acme/tiny"):
            for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
                assert_openai_error(client.request(method, path), 405, "method_not_allowed")
