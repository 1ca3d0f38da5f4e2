"""End to end: ``python -m portal.devstack run`` (what ``make run`` runs) brings the
platform up from nothing; the official openai SDK chats with the demo model through the
gateway and a replica the node agent started; killing the launcher leaves no orphans."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from compute.agent.procs import free_port, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DEMO = "openmaas/demo-tiny"
STARTUP_S = 600
# The tests check that the demo model is built, served and chatted with, not what it
# answers: two training steps build the same model files as the default's hundreds.
DEMO_STEPS = "2"


def clean_env() -> dict[str, str]:
    """The launcher starts its own services: drop the test session's."""
    skip = {
        "DATABASE_URL",
        "REDIS_URL",
        "S3_ENDPOINT",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "OPENMAAS_DEVSTACK_DIR",
        "S3_BUCKET_PREFIX",
        "DJANGO_SETTINGS_MODULE",
        "DATABASE_CONN_MAX_AGE",
    }
    return {k: v for k, v in os.environ.items() if k not in skip}


class Launcher:
    def __init__(
        self,
        root: Path,
        port: int,
        extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root, self.port = root, port
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "portal.devstack",
                "run",
                "--root",
                str(root),
                "--port",
                str(port),
                "--demo-steps",
                DEMO_STEPS,
                *extra_args,
            ],
            cwd=REPO,
            env={**clean_env(), **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                self.ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while not self.ready.wait(1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "launcher did not become ready:\n" + "\n".join(self.lines[-60:])
                )

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Launcher]]:
    """The launchers of this module, newest last; tests may stop one and start another."""
    launchers = [Launcher(tmp_path_factory.mktemp("devstack"), free_port())]
    try:
        launchers[0].wait_ready()
        yield launchers
    finally:
        for launcher in launchers:
            if launcher.proc.poll() is None:
                os.killpg(launcher.proc.pid, signal.SIGKILL)


@pytest.fixture
def launched(stack: list[Launcher]) -> Launcher:
    return stack[-1]


def client(launched: Launcher) -> openai.OpenAI:
    key = (launched.root / "demo_api_key").read_text().strip()
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{launched.port}/v1", api_key=key, max_retries=0
    )


def alive(processes: list[psutil.Process]) -> list[tuple[int, str]]:
    """The processes still running (a zombie has exited)."""
    running = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append((p.pid, p.name()))
        except psutil.NoSuchProcess:
            continue
    return running


def wait_gone(processes: list[psutil.Process], timeout_s: float = 60) -> list[tuple[int, str]]:
    """The processes still alive after waiting up to ``timeout_s`` for all to exit."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not alive(processes), timeout_s=timeout_s, what="exit", ignore=())
    return alive(processes)


def test_progress_is_shown_while_starting(launched):
    text = "\n".join(launched.lines)
    for step in (
        "starting PostgreSQL",
        "starting Redis",
        "starting SeaweedFS",
        "applying database migrations",
        "starting web",
        "starting agent",
    ):
        assert step in text
    assert (launched.root / "admin_password").read_text().strip() in text


def test_sdk_lists_models_and_chats_with_demo_model(launched):
    sdk = client(launched)
    assert DEMO in [m.id for m in sdk.models.list()]
    reply = sdk.chat.completions.create(
        model=DEMO,
        messages=[{"role": "user", "content": "你好，介绍一下 openmaas。"}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0


def test_sdk_streams_chat_with_demo_model(launched):
    chunks = list(
        client(launched).chat.completions.create(
            model=DEMO,
            messages=[{"role": "user", "content": "What is openmaas?"}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_sigterm_stops_everything_and_a_restart_reuses_the_data(stack):
    first = stack[-1]
    family = first.descendants()
    key = (first.root / "demo_api_key").read_text()
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(90) == 0
    assert not wait_gone(family)
    second = Launcher(first.root, free_port())
    stack.append(second)
    second.wait_ready()
    demo = httpx.get(
        f"http://127.0.0.1:{second.port}/api/models/{DEMO}/",
        headers={"Authorization": f"Bearer {key.strip()}"},
    ).json()
    assert demo["latest_version"] == 1  # the demo model was not built again
    assert (second.root / "demo_api_key").read_text() == key
    reply = client(second).chat.completions.create(
        model=DEMO, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.usage.completion_tokens > 0


def test_killing_the_launcher_leaves_no_orphans(launched):
    family = launched.descendants()
    names = {p.name() for p in family}
    assert {"postgres", "redis-server", "weed"} <= names, names
    assert len(family) >= 8
    launched.proc.send_signal(signal.SIGKILL)
    launched.proc.wait(10)
    assert not wait_gone(family)


def test_external_services_are_used_instead_of_embedded_ones(tmp_path):
    external = {
        name: os.environ[name]
        for name in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY")
    }
    launcher = Launcher(
        tmp_path,
        free_port(),
        ("--no-agent",),
        {**external, "S3_BUCKET_PREFIX": "openmaas-external"},
    )
    try:
        launcher.wait_ready()
        names = {p.name() for p in launcher.descendants()}
        assert not names & {"postgres", "redis-server", "weed"}, names
        key = (tmp_path / "demo_api_key").read_text().strip()
        me = httpx.get(
            f"http://127.0.0.1:{launcher.port}/api/auth/me/",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert me.json()["username"] == "admin"
    finally:
        launcher.proc.send_signal(signal.SIGTERM)
        launcher.proc.wait(60)
