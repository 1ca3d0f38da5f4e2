"""The browser-test harness: Debian's chromium driven by pytest-playwright against the
real portal (uvicorn serving the gateway and Django) and, for pages that need one, a
real node agent serving the tiny model.

Shared fixtures for every page's tests:

- ``portal_url``: the live portal's base URL (one server for the whole package; pages
  navigate with paths, e.g. ``page.goto("/playground/")``).
- ``signed_in_page``: a page whose browser context belongs to a freshly signed-up user.
- ``served_model``: the name of a public model with a ready replica (an agent process).
- :func:`sign_up` and :func:`off_loop` helpers.

Playwright's sync API keeps an asyncio loop running on the main thread, where Django's
ORM refuses to run; fixtures and tests therefore reach the database through
:func:`off_loop`. The Playwright fixtures are package-scoped here (the plugin makes them
session-wide) so that loop is gone before any later test module uses the ORM.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    BrowserType,
    Page,
    Playwright,
    sync_playwright,
)

from compute.agent.procs import free_port, spawn, stop, wait_for
from portal.gateway.server import HTTP_PROTOCOL

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

SERVED_MODEL = "acme/tiny-chat"
PASSWORD = "browser-pass-42"
T = TypeVar("T")


def off_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` (ORM work) in a worker thread, away from Playwright's event loop."""

    def run() -> T:
        from django.db import connections

        try:
            return fn()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def chromium_executable() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed: `make browser` (part of `make test`) "
            "installs it with apt-get; Playwright's own browsers are never downloaded."
        )
    return path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
    return {
        **browser_type_launch_args,
        "executable_path": chromium_executable(),
        "args": ["--no-sandbox", "--disable-dev-shm-usage"],
    }


@pytest.fixture(autouse=True)
def db() -> None:
    """In this package the database is the live portal's: committed and shared by the
    package's tests (the server thread could not see a per-test transaction), flushed
    when the package ends (see ``portal_url``). Naming ``db`` also tells pytest-django
    to create the test database for these tests."""


@pytest.fixture(scope="package")
def portal_url(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """The real ASGI app on a free loopback port, shared by the package's tests.

    The database stays unblocked and committed for the package (no per-test
    transaction: the server thread must see the tests' writes) and is flushed after.
    """
    import uvicorn
    from django.core.management import call_command

    port = free_port()
    config = uvicorn.Config(
        "portal.asgi:application",
        host="127.0.0.1",
        port=port,
        http=HTTP_PROTOCOL,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    with django_db_blocker.unblock():
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: server.started, timeout_s=30, what="uvicorn")
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(15)
            off_loop(lambda: call_command("flush", interactive=False, verbosity=0))


@pytest.fixture(scope="package")
def playwright(portal_url: str) -> Iterator[Playwright]:
    # Depends on portal_url so the server (and its database access) outlives the loop.
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    browser_type: BrowserType = getattr(playwright, browser_name)
    return browser_type


@pytest.fixture(scope="package")
def launch_browser(
    browser_type_launch_args: dict[str, Any], browser_type: BrowserType
) -> Callable[..., Browser]:
    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="package")
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    browser = launch_browser()
    yield browser
    browser.close()


@pytest.fixture(scope="package")
def browser_context_args(portal_url: str) -> dict[str, Any]:
    return {"base_url": portal_url}


def sign_up(page: Page, username: str | None = None) -> str:
    """Sign up through the form (the page lands on the API keys page); the username."""
    username = username or f"user-{uuid.uuid4().hex[:10]}"
    page.goto("/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form:not(#language-switch) button[type=submit]")
    page.wait_for_url("**/keys/")
    return username


@pytest.fixture
def signed_in_page(new_context: Callable[..., BrowserContext]) -> Page:
    """A page of a new signed-in user whose browser prefers Chinese (the portal's
    default language); for another, sign up on ``new_context(locale=...).new_page()``."""
    page = new_context(locale="zh-CN").new_page()
    sign_up(page)
    return page


# One per package: a second one would deploy the model again while the first one's
# deployment still holds its replica on a node whose agent is gone.
@pytest.fixture(scope="package")
def served_model(portal_url: str, tiny_model_dir: Path, tmp_path_factory: Any) -> Iterator[str]:
    """A public model with a ready replica: a real node agent process joined to the
    portal starts a real engine of the tiny model."""
    from compute.models import Deployment, Replica, ReplicaStatus
    from compute.services.deployments import deploy_model
    from compute.services.nodes import create_node
    from portal.services.registry import import_model_dir
    from tests.conftest import make_actor

    def deploy() -> tuple[Deployment, str]:
        admin = make_actor(f"admin-{uuid.uuid4().hex[:8]}", is_staff=True, is_superuser=True)
        version = import_model_dir(tiny_model_dir, SERVED_MODEL, actor=None, visibility="public")
        deployment = deploy_model(admin.user, version.repo, replicas=1)
        _, token = create_node(admin.user, f"browser-node-{uuid.uuid4().hex[:6]}")
        return deployment, token

    deployment, token = off_loop(deploy)
    work = tmp_path_factory.mktemp("browser-agent")
    log = work / "agent.log"
    agent = spawn(
        [sys.executable, "-m", "compute.agent", "--portal", portal_url, "--work-dir", str(work)],
        log=log,
        env={**os.environ, "OPENMAAS_NODE_TOKEN": token},
    )

    def ready() -> bool:
        return Replica.objects.filter(deployment=deployment, status=ReplicaStatus.READY).exists()

    try:
        off_loop(
            lambda: wait_for(ready, timeout_s=120, what="a replica", proc=agent, log=log, ignore=())
        )
        yield SERVED_MODEL
    finally:
        stop(agent, grace_s=20)
