from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.errors import PlatformError
from portal.models import Visibility


class Command(BaseCommand):
    help = "Import a local Hugging Face model directory into the registry as owner/name."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", required=True, help="owner/name in the registry")
        parser.add_argument("--visibility", choices=Visibility.values, default=Visibility.PUBLIC)
        parser.add_argument("--user", help="act as this user (default: no user, full rights)")
        parser.add_argument("--message", default="", help="a note kept with the version")

    def handle(self, *args: Any, **options: Any) -> None:
        from portal.services.registry import import_model_dir
        from portal.storage import store

        actor = None
        if options["user"]:
            actor = get_user_model().objects.filter(username=options["user"]).first()
            if actor is None:
                raise CommandError(f"No user named '{options['user']}'.")
        store().ensure_buckets()
        try:
            version = import_model_dir(
                options["path"],
                options["name"],
                actor=actor,
                visibility=options["visibility"],
                message=options["message"],
            )
        except PlatformError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"{version} revision {version.revision[:12]} "
            f"({version.files.count()} files, {version.total_bytes} bytes)"
        )
