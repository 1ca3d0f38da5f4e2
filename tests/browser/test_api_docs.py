"""``/api/docs/`` renders Swagger UI from the installed sidecar: no request leaves for
another host (all are blocked and recorded) and the operations are listed."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Page, Route, expect


def test_api_docs_render_offline(page: Page, portal_url: str) -> None:
    local = urlsplit(portal_url).netloc
    foreign: list[str] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).netloc == local:
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_local)
    page.goto("/api/docs/")
    operation = page.locator(".opblock-summary-path", has_text="/api/keys/").first
    expect(operation).to_be_visible(timeout=30_000)
    page.wait_for_load_state("networkidle")
    assert foreign == []
