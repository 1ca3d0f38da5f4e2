"""Idempotent first-run setup of the local stack (called by ``make run``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from compute.models import Deployment, DeploymentStatus, Node
from compute.services.deployments import deploy_model
from compute.services.nodes import create_node, rotate_node_token
from evaluation.services.catalog import sync_builtin
from governance.moderation.pipeline import load_classifier
from governance.services import banks as governance_banks
from governance.services import lists as governance_lists
from portal.models import ModelRepo
from portal.services.keys import create_api_key, lookup_key
from portal.storage import store

ADMIN = "admin"
NODE = "local-cpu"
DEMO = ("openmaas", "demo-tiny")


class Command(BaseCommand):
    help = (
        "Create the local admin, a demo API key, the demo model, a node token, a deployment,"
        " and the built-in evaluation suites."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--root", type=Path, required=True)
        parser.add_argument("--demo-steps", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        root: Path = options["root"]
        store().ensure_buckets()
        admin = self._admin(root)
        self._demo_key(root, admin)
        build = ["build_demo_model"]
        if options["demo_steps"] is not None:
            build += ["--steps", str(options["demo_steps"])]
        call_command(*build)
        self._node_token(root, admin)
        self._deployment(admin)
        # The built-in evaluation tasks and suites, public under the openmaas organisation.
        sync_builtin()
        governance_lists.sync_builtin()  # the shipped lexicons, as platform lists
        governance_banks.sync_builtin()  # the shipped test question banks, likewise
        # Train (once per machine, ~25 s; cached) the shipped moderation classifier now,
        # not inside the first request that needs it.
        load_classifier()

    @staticmethod
    def _write_secret(path: Path, value: str) -> None:
        path.write_text(value + "\n")
        path.chmod(0o600)

    def _admin(self, root: Path) -> Any:
        users = get_user_model().objects
        admin = users.filter(username=ADMIN).first()
        password_file = root / "admin_password"
        if admin is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            if admin is None:
                admin = users.create_superuser(ADMIN, "admin@localhost", password)
            else:
                admin.set_password(password)
                admin.save()
            self._write_secret(password_file, password)
        return admin

    def _demo_key(self, root: Path, admin: Any) -> None:
        path = root / "demo_api_key"
        if path.exists() and lookup_key(path.read_text().strip()) is not None:
            return
        _, raw = create_api_key(admin, "demo (make run)")
        self._write_secret(path, raw)

    def _node_token(self, root: Path, admin: Any) -> None:
        path = root / "node_token"
        node = Node.objects.filter(name=NODE).first()
        if node is not None and path.exists():
            return
        if node is None:
            node, token = create_node(admin, NODE)
        else:
            token = rotate_node_token(node)
        self._write_secret(path, token)

    def _deployment(self, admin: Any) -> None:
        repo = ModelRepo.objects.get(namespace=DEMO[0], name=DEMO[1])
        latest = repo.latest_version()
        current = Deployment.objects.filter(
            served_name=repo.full_name, status=DeploymentStatus.ACTIVE
        ).first()
        if current is None or current.model_version_id != getattr(latest, "pk", None):
            deploy_model(admin, repo, version=latest, replicas=1)
            self.stdout.write(f"deployed {repo.full_name}")
