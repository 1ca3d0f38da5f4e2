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
    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=30_000)
    # Swagger UI renders a long operation list as it scrolls into view: scroll to it.
    operation = page.locator(".opblock-summary-path", has_text="/api/keys/").first
    for _ in range(200):
        if operation.count():
            break
        page.mouse.wheel(0, 600)
        page.wait_for_timeout(50)
    expect(operation).to_be_visible(timeout=30_000)
    page.wait_for_load_state("networkidle")
    assert foreign == []
