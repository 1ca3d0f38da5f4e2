"""The fixed cast of every test: an owner, a teammate in the owner's organisation, an
outsider and an admin, each with an API key; plus real-HTTP helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from portal.models import Organization, Role
from portal.services.keys import create_api_key
from portal.storage import store

# The demo model's training steps in tests: enough for greedy answers to end with
# <|im_end|>, a few seconds of CPU.
DEMO_TEST_STEPS = 100


@dataclass
class Actor:
    user: Any
    key: str

    def client(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.key}")
        return client


def make_actor(username: str, **extra: Any) -> Actor:
    user = get_user_model().objects.create_user(
        username=username, password="pw-" + username, **extra
    )
    _, raw = create_api_key(user, name=f"{username}-key")
    return Actor(user, raw)


@pytest.fixture(scope="session", autouse=True)
def _buckets() -> None:
    store().ensure_buckets()


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    """Hash the cast's passwords with one MD5 round instead of PBKDF2's million: each
    actor of each test otherwise spends a third of a second of CPU on it (Django's own
    advice for test settings). What a hash looks like is tested nowhere; logging in
    with a password still checks it."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def owner(db: Any) -> Actor:
    return make_actor("olivia")


@pytest.fixture
def org(owner: Actor) -> Organization:
    from portal.services.accounts import create_organization

    return create_organization(owner.user, "acme-lab")


@pytest.fixture
def teammate(org: Organization) -> Actor:
    actor = make_actor("tomas")
    org.memberships.create(user=actor.user, role=Role.MEMBER)
    return actor


@pytest.fixture
def outsider(db: Any) -> Actor:
    return make_actor("oscar")


@pytest.fixture
def admin(db: Any) -> Actor:
    return make_actor("ada", is_staff=True, is_superuser=True)


@pytest.fixture
def anon(db: Any) -> APIClient:
    return APIClient()


@contextlib.contextmanager
def serving_portal(http: str = "") -> Iterator[str]:
    """The real ASGI app (gateway + Django) served by uvicorn in a thread on a free loopback
    port, for as long as the block runs; yields its base URL. ``http``: uvicorn's HTTP
    protocol, by default the web process's (``portal.gateway.server``)."""
    import threading

    import uvicorn

    from compute.agent.procs import free_port, wait_for
    from portal.gateway.server import HTTP_PROTOCOL

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            "portal.asgi:application",
            host="127.0.0.1",
            port=port,
            http=http or HTTP_PROTOCOL,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout_s=30, what="uvicorn")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live_portal(transactional_db: Any) -> Iterator[str]:
    """The real ASGI app (gateway + Django) served by uvicorn on a free loopback port."""
    with serving_portal() as url:
        yield url


@pytest.fixture(scope="session")
def _shared_test_db(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The test database, also when no collected test asks for ``db`` (pytest-django then
    sets none up): a run of only ``module_db`` modules."""
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    if connection.settings_dict["NAME"] == connection.creation._get_test_db_name():
        yield  # pytest-django set it up and tears it down
        return
    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=0)


@pytest.fixture(scope="module")
def module_db(_shared_test_db: None, django_db_blocker: Any) -> Iterator[None]:
    """Committed rows shared by all the tests of a module, emptied when the module ends
    (the flush ``transactional_db`` does after each test).

    For modules whose tests share one expensive live set-up (a portal, a node agent and
    its engine): their tests take the module's actors (``module_owner``...), never ``db``
    or ``transactional_db``, whose per-test rollback or flush would pull the rows from
    under the shared processes. Later tests see what earlier ones left.
    """
    from django.core.management import call_command

    with django_db_blocker.unblock():
        try:
            yield
        finally:
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def module_live_portal(module_db: None) -> Iterator[str]:
    """``live_portal`` for the whole module (see ``module_db``)."""
    with serving_portal() as url:
        yield url


@pytest.fixture(scope="module")
def module_owner(module_db: None) -> Actor:
    return make_actor("olivia")


@pytest.fixture(scope="module")
def module_admin(module_db: None) -> Actor:
    return make_actor("ada", is_staff=True, is_superuser=True)


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``openmaas/demo-tiny`` as ``make run`` builds it, with fewer training steps (enough
    for its answers to end at ``<|im_end|>``); built once per session."""
    from portal.demo.builder import build_demo_model

    out = tmp_path_factory.mktemp("demo-tiny")
    return build_demo_model(out, steps=DEMO_TEST_STEPS, say=lambda msg: None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A deterministic tiny Llama model directory (tokenizer, chat template, safetensors)."""
    from tests.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(out)
    return out


@pytest.fixture(scope="session")
def engine_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The CPU engine as a real subprocess serving the tiny model (batch size 8), one for
    the whole session (helpers in tests/compute/conftest.py).

    Teardown checks the engine's SIGTERM contract: it must exit cleanly (status 0).
    """
    from tests.compute.conftest import start_engine, stop_engine

    log_path = tmp_path_factory.mktemp("engine-logs") / "engine.log"
    # One intra-op thread: on a small shared host, OpenMP workers waiting on a descheduled
    # sibling make each step tens of times slower.
    engine = start_engine(tiny_model_dir, log_path, "--max-batch-size", "8", "--num-threads", "1")
    yield engine
    assert stop_engine(engine) == 0, f"engine did not exit cleanly on SIGTERM:\n{engine.logs()}"


WATERMARK_KEY = "test-watermark-secret"  # the session's watermarked engine plants this key


@pytest.fixture(scope="session")
def watermark_engine(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A second CPU engine over the tiny model that plants the text watermark (default
    gamma and delta) keyed by :data:`WATERMARK_KEY`, given as the agent gives it: in the
    environment."""
    from tests.compute.conftest import start_engine, stop_engine

    log_path = tmp_path_factory.mktemp("watermark-engine-logs") / "engine.log"
    engine = start_engine(
        tiny_model_dir,
        log_path,
        "--watermark",
        "--num-threads",
        "1",
        env={"OPENMAAS_WATERMARK_KEY": WATERMARK_KEY},
    )
    yield engine
    assert stop_engine(engine) == 0, f"engine did not exit cleanly on SIGTERM:\n{engine.logs()}"


@pytest.fixture(scope="session")
def engine_client(engine_server: Any) -> Iterator[Any]:
    """An HTTP client of the running engine that sends its API key."""
    import httpx

    from tests.compute.conftest import ENGINE_API_KEY

    auth = {"Authorization": f"Bearer {ENGINE_API_KEY}"}
    with httpx.Client(base_url=engine_server.base_url, timeout=60.0, headers=auth) as c:
        yield c


@pytest.fixture(scope="session")
def engine_url(engine_server: Any) -> str:
    """Base URL of the running engine, e.g. ``http://127.0.0.1:PORT``."""
    return engine_server.base_url
