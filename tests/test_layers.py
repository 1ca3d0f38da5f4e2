"""The node side (agent, engines) runs on third-party hosts without Django, Celery or portal.

``lint-imports`` (``make check``) checks the static import graph against the contracts in
``pyproject.toml``; this test checks what actually gets loaded, lazy imports included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NODE_SIDE_MODULES = (
    "compute.agent.__main__",
    "compute.agent.procs",
    "compute.engines.transformers",
    "compute.engines.transformers.server",
    "compute.engines.transformers_adapter",
    "compute.engines.vllm",
    "training.runner.__main__",
    "training.runner.run",
    "training.runner.train",
)
HUB_ONLY = ("django", "celery", "rest_framework", "portal")


def test_node_side_loads_no_django_celery_or_portal():
    code = (
        f"import importlib, sys\n"
        f"for name in {NODE_SIDE_MODULES!r}:\n"
        f"    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {HUB_ONLY!r})\n"
        f"assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_model_page_learns_it_is_served_from_compute_through_the_hook(db, owner):
    """The hub core's model page asks ``portal.hooks``; compute answers from its deployments."""
    from compute.services.deployments import stop_deployment
    from tests.factories import deployment

    dep = deployment(owner.user, "served-model")
    page = owner.client().get(f"/models/{dep.served_name}/")
    assert "client.chat.completions.create" in page.content.decode()
    stop_deployment(owner.user, dep)
    page = owner.client().get(f"/models/{dep.served_name}/")
    assert "client.chat.completions.create" not in page.content.decode()
