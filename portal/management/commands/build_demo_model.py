"""``manage.py build_demo_model``: train the demo model locally and register it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.errors import PlatformError

DEMO_NAMESPACE, DEMO_NAME = "openmaas", "demo-tiny"


class Command(BaseCommand):
    help = "Train the tiny bilingual demo model on CPU and register it as openmaas/demo-tiny."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--steps", type=int, default=None)
        parser.add_argument(
            "--output",
            type=Path,
            default=None,
            help="keep the model directory here (default: a temporary one)",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="build and register a new version even if one exists",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from portal.models import ModelVersion

        exists = ModelVersion.objects.filter(
            repo__namespace=DEMO_NAMESPACE, repo__name=DEMO_NAME
        ).exists()
        if exists and not options["force"]:
            self.stdout.write(f"{DEMO_NAMESPACE}/{DEMO_NAME} is registered; use --force to rebuild")
            return
        if options["output"] is not None:
            self._build_and_register(options["output"], options)
            return
        with tempfile.TemporaryDirectory(prefix="openmaas-demo-") as tmp:
            self._build_and_register(Path(tmp), options)

    def _build_and_register(self, out: Path, options: dict[str, Any]) -> None:
        from portal.demo.builder import build_demo_model
        from portal.services.registry import import_model_dir
        from portal.storage import store

        kwargs: dict[str, Any] = {
            "steps": options["steps"],
            "say": lambda m: self.stdout.write(f"  {m}"),
        }
        if options["seed"] is not None:
            kwargs["seed"] = options["seed"]
        build_demo_model(out, **kwargs)
        store().ensure_buckets()
        try:
            version = import_model_dir(
                out,
                f"{DEMO_NAMESPACE}/{DEMO_NAME}",
                actor=None,
                visibility="public",
                message="built by build_demo_model",
            )
        except PlatformError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"registered {version} (revision {version.revision[:12]})")
