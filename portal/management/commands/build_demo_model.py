"""``manage.py build_demo_model``: train the demo model locally and register it.

Idempotent for the launcher: when ``openmaas/demo-tiny`` already has a version and
``--force`` is not given, it says so and exits 0 without training.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.errors import PlatformError

DEMO_NAMESPACE, DEMO_NAME = "openmaas", "demo-tiny"
DEMO_FULL_NAME = f"{DEMO_NAMESPACE}/{DEMO_NAME}"


class Command(BaseCommand):
    help = "Train the tiny bilingual demo model on CPU and register it as openmaas/demo-tiny."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=None, help="default: the builder's")
        parser.add_argument("--steps", type=int, default=None, help="default: the builder's")
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
        if options["steps"] is not None and options["steps"] < 1:
            raise CommandError("--steps must be at least 1.")
        existing = _latest_version()
        if existing is not None and not options["force"]:
            self.stdout.write(f"{existing} already exists; use --force to rebuild.")
            return
        if options["output"] is not None:
            self._build_and_register(options["output"], options)
            return
        with tempfile.TemporaryDirectory(prefix="openmaas-demo-") as tmp:
            self._build_and_register(Path(tmp), options)

    def _build_and_register(self, out: Path, options: dict[str, Any]) -> None:
        self._build(out, options)
        version = self._register(out)
        self.stdout.write(
            self.style.SUCCESS(f"registered {version} (revision {version.revision[:12]})")
        )

    def _build(self, out: Path, options: dict[str, Any]) -> None:
        # Imported here: torch and transformers are slow to load and most commands
        # never need them.
        from portal.demo.builder import build_demo_model

        kwargs: dict[str, Any] = {"steps": options["steps"], "say": self._say(options)}
        if options["seed"] is not None:
            kwargs["seed"] = options["seed"]
        try:
            build_demo_model(out, **kwargs)
        except Exception as exc:
            raise CommandError(f"building the demo model in {out} failed: {exc}") from exc

    def _register(self, out: Path) -> Any:
        from portal.services.registry import import_model_dir
        from portal.storage import store

        try:
            store().ensure_buckets()
            return import_model_dir(
                out,
                DEMO_FULL_NAME,
                actor=None,
                visibility="public",
                message="built by build_demo_model",
            )
        except PlatformError as exc:
            raise CommandError(f"registering {DEMO_FULL_NAME} failed: {exc.message}") from exc
        except Exception as exc:
            raise CommandError(f"registering {DEMO_FULL_NAME} failed: {exc}") from exc

    def _say(self, options: dict[str, Any]) -> Any:
        if options["verbosity"] < 1:
            return lambda msg: None
        return lambda msg: self.stdout.write(f"  {msg}")


def _latest_version() -> Any:
    """The newest registered version of the demo model, or None."""
    from portal.models import ModelVersion

    return (
        ModelVersion.objects.filter(repo__namespace=DEMO_NAMESPACE, repo__name=DEMO_NAME)
        .order_by("-number")
        .first()
    )
